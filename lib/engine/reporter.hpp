// SPDX-License-Identifier: MIT
// Error reporting (internal): the region's handler, or the default that
// prints at most one line per second to stderr; every report is counted.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string_view>

#include "dogpile/errors.hpp"
#include "engine/counters.hpp"

namespace dogpile::detail {

/// The default handler: one line per second at most, with a count of the
/// lines it held back. Keys are printed with unprintable bytes escaped.
class StderrReporter {
 public:
  void operator()(const ErrorEvent& e);

 private:
  std::atomic<std::int64_t> last_{std::numeric_limits<std::int64_t>::min() / 2};
  std::atomic<std::uint64_t> suppressed_{0};
};

class Reporter {
 public:
  Reporter(ErrorHandler handler, Counters& counters);

  /// Counts the error (backend_errors, decode_errors or lock_errors by kind)
  /// and hands it to the handler. Never throws; the handler's exceptions are
  /// swallowed.
  void report(ErrorKind kind, std::string_view operation, std::string_view key,
              std::string_view message, std::string_view server = {},
              std::string_view code = {}) noexcept;
  /// The same for an exception: its message, and a BackendError's server
  /// and code.
  void report(ErrorKind kind, std::string_view operation, std::string_view key,
              const std::exception& error, std::string_view note = {}) noexcept;

  void set_handler(ErrorHandler handler);

  /// In a forked child: the handler's mutex may have been held.
  void reset_after_fork() noexcept;

 private:
  Counters& counters_;
  std::mutex mutex_;
  std::shared_ptr<const ErrorHandler> handler_;
  StderrReporter default_;
};

}  // namespace dogpile::detail
