// SPDX-License-Identifier: MIT
// The region's invalidation record (internal).
//
// Two timestamps on the fleet clock, in microseconds since the epoch: values
// whose creation started before `hard` are misses, before `soft` stale. Only
// ever raised. Stored in the backend as one item under `<prefix>#inv` (its own
// flags; two little-endian int64s and the key's check), read by each process
// at most once per interval, on the first call after it passes.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "dogpile/backend.hpp"
#include "dogpile/options.hpp"
#include "engine/counters.hpp"
#include "engine/metrics.hpp"
#include "engine/reporter.hpp"
#include "format/invalidation_times.hpp"

namespace dogpile::detail {

class Invalidations {
 public:
  Invalidations(Backend& backend, std::string key, std::optional<Duration> interval,
                const Clock& clock, Reporter& reporter, Counters& counters,
                Metrics* metrics = nullptr);

  /// Reads the record if the interval has passed: one caller per interval
  /// does (one backend `get`), the others go on with what is known. Writes it
  /// back if it was evicted. Never throws.
  /// Whether it read the record (a request).
  bool check(SteadyTime now) noexcept;

  /// What this process knows.
  [[nodiscard]] InvalidationTimes current() const noexcept {
    return {hard_.load(std::memory_order_acquire), soft_.load(std::memory_order_acquire)};
  }

  /// Raises this process's timestamp at once, then merges it into the stored
  /// record. `at` is on the fleet clock. Never throws.
  void invalidate(Invalidation kind, TimePoint at) noexcept;

  [[nodiscard]] const std::string& key() const noexcept { return key_; }

 private:
  void fetch() noexcept;
  void raise(const InvalidationTimes& t) noexcept;

  Backend& backend_;
  const std::string key_;
  const std::uint64_t check_;
  const std::optional<Duration> interval_;
  const Clock& clock_;
  Reporter& reporter_;
  Counters& counters_;
  Metrics* metrics_;
  std::atomic<std::int64_t> hard_{InvalidationTimes::kNever};
  std::atomic<std::int64_t> soft_{InvalidationTimes::kNever};
  std::atomic<SteadyTime::rep> next_check_{std::numeric_limits<SteadyTime::rep>::min()};
};

}  // namespace dogpile::detail
