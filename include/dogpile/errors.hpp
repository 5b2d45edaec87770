// SPDX-License-Identifier: MIT
// dogpile/errors.hpp — what a region reports, and what it throws at a
// waiting caller.
//
// Types: ErrorKind, ErrorEvent, ErrorHandler, WaitTimeout. (A backend's own
// failures are BackendError, in dogpile/backend.hpp.)
#pragma once

#include <functional>
#include <stdexcept>
#include <string_view>

namespace dogpile {

/// What went wrong, for the error handler.
enum class ErrorKind {
  backend,  ///< a backend operation failed (server down, timeout, item too large, ...)
  decode,   ///< a stored item was not a readable envelope or value: treated as a miss
  lock,     ///< a distributed lock was lost, or its creator was declared hung
  creator,  ///< a creator threw where no caller receives the exception: in the
            ///< background, or replaced by the stale value (serve_stale_on_error)
  fenced,   ///< a creation's store was refused because the key was written (set,
            ///< removed, or created elsewhere) while it ran: its value reached its
            ///< callers but was not stored
};

[[nodiscard]] const char* to_string(ErrorKind kind) noexcept;

/// One reported error. The views are valid only during the handler call.
struct ErrorEvent {
  ErrorKind kind;
  std::string_view operation;  ///< e.g. "get", "set", "lock", "decode"
  std::string_view key;        ///< the user's key, as given
  std::string_view message;    ///< no pointer addresses or library source paths
  std::string_view server{};   ///< the server that failed ("host:port"), if known
  /// A stable name of what failed, for grouping: BackendError::code() for
  /// backend errors; for decode errors the envelope's refusal
  /// ("key_mismatch", "bad_compression", ...) or "codec"; empty if unknown.
  std::string_view code{};
};

/// Called for every reported error, from the calling thread or from the
/// region's background thread; it must be thread-safe and should be quick.
/// Exceptions it throws are swallowed.
using ErrorHandler = std::function<void(const ErrorEvent&)>;

/// Thrown by get_or_create (and the wrappers) when a caller that has no value
/// at hand stops waiting for another's creation: its deadline passed, its
/// stop token was triggered, or WaitPolicy::max_wait ran out.
class WaitTimeout : public std::runtime_error {
 public:
  enum class Reason { deadline, cancelled, max_wait };
  WaitTimeout(Reason reason, std::string_view key);
  [[nodiscard]] Reason reason() const noexcept { return reason_; }

 private:
  Reason reason_;
};

}  // namespace dogpile
