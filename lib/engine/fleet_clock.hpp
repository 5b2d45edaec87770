// SPDX-License-Identifier: MIT
// The fleet clock (internal): this host's clock, corrected to the clock of
// one memcached server, so that every host stamps and judges times alike.
//
// A sample reads the server's time S (with resolution r) between local
// instants t0 and t1; the server's time was in [S, S + r) at some instant of
// [t0, t1], so the offset (server - local) lies in [S - t1, S + r - t0]. The
// intersection of the samples' intervals narrows it: a first sweep of samples
// at different phases of the server's second narrows it to about a tenth of
// a second; then samples timed for the instant the estimate says the server
// will tick halve it each (bisection), to about a millisecond. Intervals
// widen with time by a drift allowance, and a sample that falls outside them
// (a clock was stepped) starts afresh.
//
// The fleet's time is real time as hosts keep it; the server's clock is how
// a host finds out that its own is wrong. memcached's clock lags real time
// by the phase of its one-second tick (0 to 1 s, as its process started), so
// a host whose clock agrees with the server's to within that is in step and
// keeps its own time, from its first call on (hosts are kept far closer to
// each other than a one-second clock can tell; the server's first reading
// alone would put each up to half a second off, differently). A host whose
// clock disagrees takes the server's, moved on by half a tick (within half a
// second of the others), in doubt by half the interval's width until
// bisection narrows it: meanwhile it judges values as old as they may be
// (latest()) and stamps them as early as they may have been made
// (earliest()), so that it judges no value fresh past its expiration.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "engine/metrics.hpp"

namespace dogpile::detail {

class FleetClock {
 public:
  /// `reference_key` places the reference server; `resync` is how often a
  /// measured offset is renewed (nullopt: never measure, offset zero).
  FleetClock(const Clock& local, Backend& backend, std::string reference_key,
             std::optional<Duration> resync, Metrics* metrics = nullptr);

  /// The fleet's time now. Never blocks.
  [[nodiscard]] TimePoint now() const noexcept {
    return local_.now() + Duration(offset_.load(std::memory_order_acquire));
  }
  /// The fleet's time at its latest and earliest, given the doubt(): for
  /// judging ages, and for stamping creations and invalidations.
  [[nodiscard]] TimePoint latest() const noexcept { return now() + doubt(); }
  [[nodiscard]] TimePoint earliest() const noexcept { return now() - doubt(); }
  /// How far now() may be from the fleet's time as judged: zero while this
  /// host's clock is trusted, else half the interval's width.
  [[nodiscard]] Duration doubt() const noexcept {
    return Duration(doubt_.load(std::memory_order_acquire));
  }
  /// The current estimate of (fleet - local).
  [[nodiscard]] Duration offset() const noexcept {
    return Duration(offset_.load(std::memory_order_acquire));
  }
  /// Half the width of the interval the offset is known to lie in; max() if
  /// never measured.
  [[nodiscard]] Duration uncertainty() const;
  /// How far now() may be from the fleet's time, as told to others: the
  /// uncertainty once measured; zero when the local clock is trusted (no
  /// server clock, or clock_sync off) or not measured yet.
  [[nodiscard]] std::chrono::microseconds error() const;

  /// Called by every region call: until the offset has been measured once,
  /// one caller measures it (one request) while the others wait for it; if
  /// that fails, calls go on with the local clock and the next attempt on a
  /// call's path comes a second later. Cheap once measured.
  void ensure_measured() {
    if (unmeasured()) measure_first();
  }
  /// Whether ensure_measured() would measure (requests) now.
  [[nodiscard]] bool unmeasured() const noexcept {
    return enabled_ && !measured_.load(std::memory_order_acquire) &&
           !unavailable_.load(std::memory_order_relaxed);
  }

  /// Takes one sample (one request); false if the backend has no server
  /// clock or failed (`error`, if given, says why). Thread-safe.
  bool sample(std::string* error = nullptr);

  /// In a forked child: the mutexes may have been held.
  void reset_after_fork() noexcept;

  /// What the refining chore should do next: the delay before its next
  /// sample (a sweep, then bisections, then renewals about every `resync`),
  /// or nullopt.
  [[nodiscard]] std::optional<Duration> next_delay() const;

 private:
  const Clock& local_;
  Backend& backend_;
  Metrics* metrics_;
  const std::string reference_key_;
  const std::optional<Duration> resync_;
  const bool enabled_;

  void measure_first();

  std::mutex first_mutex_;
  SteadyTime first_retry_at_{};
  mutable std::mutex mutex_;
  Duration low_{}, high_{};  // bounds of (server - local), valid when measured_
  TimePoint bounds_at_{};    // local time the bounds were last narrowed
  int samples_in_burst_ = 0;
  Duration resolution_{};
  int failures_ = 0;  // consecutive failed samples
  std::atomic<bool> measured_{false};
  std::atomic<bool> unavailable_{false};  // the backend has no server clock
  std::atomic<Duration::rep> offset_{0};
  std::atomic<Duration::rep> doubt_{0};
};

}  // namespace dogpile::detail
