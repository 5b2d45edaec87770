// SPDX-License-Identifier: MIT
// dogpile/clock.hpp — the source of "now" for every expiry decision.
//
// Expiry is a pure function of a time point, and the time point comes from a
// `dogpile::Clock`. Production code uses `dogpile::system_clock()` (wall clock,
// because created_at stamps are shared between hosts); tests use a
// `dogpile::ManualClock` and step it instead of sleeping.
//
//   dogpile::ManualClock clock;
//   dogpile::Dogpile<> lock(std::chrono::seconds(10), {.clock = &clock});
//   clock.advance(std::chrono::seconds(11));   // the value is now expired
//
// Timers are the clock's too: deadlines, polls and lock extensions are
// measured on `steady_now()` (std::chrono::steady_clock for the system clock,
// so a step of the wall clock does not stretch them) and waited for with
// `sleep_until` and `wait_until`; with a ManualClock a test decides when that
// time has passed (`waiters()` tells how many threads wait on it).
//
// Types: TimePoint, Duration, Expiration, SteadyTime, Clock (interface), SystemClock,
// ManualClock.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>

#include "dogpile/detail/function_ref.hpp"

namespace dogpile {

/// Wall-clock time point: created_at stamps travel between processes and hosts.
using TimePoint = std::chrono::system_clock::time_point;
using Duration = std::chrono::system_clock::duration;

/// How long a value stays fresh; `no_expiration` (an empty Expiration) means forever.
using Expiration = std::optional<Duration>;
/// An Expiration of its own type (not std::nullopt), so that it also reads as
/// "forever" where an optional Expiration is expected (CallOptions::expiration).
inline constexpr Expiration no_expiration{};

namespace detail {
/// Microseconds since the Unix epoch: how times are stored beside values.
[[nodiscard]] inline std::int64_t micros_since_epoch(TimePoint t) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
}  // namespace detail
/// A point on a timer's clock: monotonic, meaningful within one process.
using SteadyTime = std::chrono::steady_clock::time_point;

/// A source of the current time. Implementations must be thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time. Never blocks, never throws.
  [[nodiscard]] virtual TimePoint now() const noexcept = 0;

  /// The timer reading: monotonic. The default is std::chrono::steady_clock.
  [[nodiscard]] virtual SteadyTime steady_now() const noexcept;

  /// Blocks until steady_now() >= deadline; false at once if `stop` is (or
  /// gets) requested first. SteadyTime::max() waits for `stop` alone.
  virtual bool sleep_until(SteadyTime deadline, std::stop_token stop = {}) const;

  /// With `lock` held (on the mutex that guards what `done` reads): waits on
  /// `cv` until done() holds, steady_now() >= deadline, or `stop` is
  /// requested, and returns done(). Whoever makes done() true must notify
  /// `cv` while holding that mutex.
  virtual bool wait_until(std::condition_variable_any& cv, std::unique_lock<std::mutex>& lock,
                          SteadyTime deadline, std::stop_token stop,
                          detail::FunctionRef<bool()> done) const;
};

/// `std::chrono::system_clock`.
class SystemClock final : public Clock {
 public:
  [[nodiscard]] TimePoint now() const noexcept override;
};

/// The process-wide SystemClock instance; the default clock everywhere.
[[nodiscard]] const Clock& system_clock() noexcept;

/// A clock that moves only when told to. Thread-safe: any thread may read it
/// while another advances it. Threads waiting on it (sleep_until,
/// wait_until) wake within a millisecond of real time once it is advanced
/// past their deadline.
class ManualClock final : public Clock {
 public:
  /// Starts at `start` (default: 2026-01-01T00:00:00Z, a fixed, recognisable instant).
  explicit ManualClock(TimePoint start = default_start()) noexcept;

  [[nodiscard]] TimePoint now() const noexcept override;
  /// This clock's own time, read as a timer: timers move when it is advanced.
  [[nodiscard]] SteadyTime steady_now() const noexcept override;
  bool sleep_until(SteadyTime deadline, std::stop_token stop = {}) const override;
  bool wait_until(std::condition_variable_any& cv, std::unique_lock<std::mutex>& lock,
                  SteadyTime deadline, std::stop_token stop,
                  detail::FunctionRef<bool()> done) const override;
  /// Threads whose wait on this clock ends at a time it has not reached yet
  /// (in sleep_until, or in wait_until with a deadline).
  [[nodiscard]] int waiters() const noexcept { return waiters_.load(std::memory_order_acquire); }
  /// Threads in sleep_until: a caller's pause between polls.
  [[nodiscard]] int sleepers() const noexcept { return sleepers_.load(std::memory_order_acquire); }
  /// Moves time forward (or backward, for a negative step) by `step`.
  void advance(Duration step) noexcept;
  /// Jumps to `t`.
  void set(TimePoint t) noexcept;

  [[nodiscard]] static TimePoint default_start() noexcept;

 private:
  std::atomic<Duration::rep> ticks_;
  mutable std::atomic<int> waiters_{0};
  mutable std::atomic<int> sleepers_{0};
};

}  // namespace dogpile
