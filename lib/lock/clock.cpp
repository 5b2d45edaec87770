// SPDX-License-Identifier: MIT
#include "dogpile/clock.hpp"

namespace dogpile {
SteadyTime Clock::steady_now() const noexcept { return std::chrono::steady_clock::now(); }

bool Clock::sleep_until(SteadyTime deadline, std::stop_token stop) const {
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  wait_until(cv, lock, deadline, stop, [] { return false; });
  return !stop.stop_requested();
}

bool Clock::wait_until(std::condition_variable_any& cv, std::unique_lock<std::mutex>& lock,
                       SteadyTime deadline, std::stop_token stop,
                       detail::FunctionRef<bool()> done) const {
  if (deadline == SteadyTime::max()) return cv.wait(lock, stop, [&] { return done(); });
  return cv.wait_until(lock, stop, deadline, [&] { return done(); });
}

TimePoint SystemClock::now() const noexcept { return std::chrono::system_clock::now(); }

const Clock& system_clock() noexcept {
  static const SystemClock instance;
  return instance;
}

ManualClock::ManualClock(TimePoint start) noexcept : ticks_(start.time_since_epoch().count()) {}

TimePoint ManualClock::now() const noexcept {
  return TimePoint(Duration(ticks_.load(std::memory_order_acquire)));
}

SteadyTime ManualClock::steady_now() const noexcept {
  return SteadyTime(std::chrono::duration_cast<SteadyTime::duration>(
      Duration(ticks_.load(std::memory_order_acquire))));
}

bool ManualClock::sleep_until(SteadyTime deadline, std::stop_token stop) const {
  sleepers_.fetch_add(1, std::memory_order_acq_rel);
  const bool slept = Clock::sleep_until(deadline, std::move(stop));
  sleepers_.fetch_sub(1, std::memory_order_acq_rel);
  return slept;
}

// Waits in slices of a millisecond of real time, reading the clock between
// them: advance() needs no list of waiters to wake, and a waiter is late by
// at most a slice.
bool ManualClock::wait_until(std::condition_variable_any& cv, std::unique_lock<std::mutex>& lock,
                             SteadyTime deadline, std::stop_token stop,
                             detail::FunctionRef<bool()> done) const {
  const bool timed = deadline != SteadyTime::max();
  if (timed) waiters_.fetch_add(1, std::memory_order_acq_rel);
  struct Leave {
    std::atomic<int>& n;
    bool timed;
    ~Leave() {
      if (timed) n.fetch_sub(1, std::memory_order_acq_rel);
    }
  } leave{waiters_, timed};
  for (;;) {
    if (done()) return true;
    if (stop.stop_requested() || steady_now() >= deadline) return false;
    cv.wait_for(lock, stop, std::chrono::milliseconds(1), [&] { return done(); });
  }
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
