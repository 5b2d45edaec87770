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
// Types: TimePoint, Duration, Clock (interface), SystemClock, ManualClock.
#pragma once

#include <atomic>
#include <chrono>

namespace dogpile {

/// Wall-clock time point: created_at stamps travel between processes and hosts.
using TimePoint = std::chrono::system_clock::time_point;
using Duration = std::chrono::system_clock::duration;

/// A source of the current time. Implementations must be thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time. Never blocks, never throws.
  [[nodiscard]] virtual TimePoint now() const noexcept = 0;
};

/// `std::chrono::system_clock`.
class SystemClock final : public Clock {
 public:
  [[nodiscard]] TimePoint now() const noexcept override;
};

/// The process-wide SystemClock instance; the default clock everywhere.
[[nodiscard]] const Clock& system_clock() noexcept;

/// A clock that moves only when told to. Thread-safe: any thread may read it
/// while another advances it.
class ManualClock final : public Clock {
 public:
  /// Starts at `start` (default: 2026-01-01T00:00:00Z, a fixed, recognisable instant).
  explicit ManualClock(TimePoint start = default_start()) noexcept;

  [[nodiscard]] TimePoint now() const noexcept override;
  /// Moves time forward (or backward, for a negative step) by `step`.
  void advance(Duration step) noexcept;
  /// Jumps to `t`.
  void set(TimePoint t) noexcept;

  [[nodiscard]] static TimePoint default_start() noexcept;

 private:
  std::atomic<Duration::rep> ticks_;
};

}  // namespace dogpile
