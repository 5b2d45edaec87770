#include "dogpile/clock.hpp"

namespace dogpile {

TimePoint SystemClock::now() const noexcept { return std::chrono::system_clock::now(); }

const Clock& system_clock() noexcept {
  static const SystemClock instance;
  return instance;
}

ManualClock::ManualClock(TimePoint start) noexcept : ticks_(start.time_since_epoch().count()) {}

TimePoint ManualClock::now() const noexcept {
  return TimePoint(Duration(ticks_.load(std::memory_order_acquire)));
}

void ManualClock::advance(Duration step) noexcept {
  ticks_.fetch_add(step.count(), std::memory_order_acq_rel);
}

void ManualClock::set(TimePoint t) noexcept {
  ticks_.store(t.time_since_epoch().count(), std::memory_order_release);
}

TimePoint ManualClock::default_start() noexcept {
  using namespace std::chrono;
  return sys_days(year(2026) / January / 1);
}

}  // namespace dogpile
