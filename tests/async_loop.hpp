// SPDX-License-Identifier: MIT
// A loop of the tests' own for calls that wait without a thread: a queue,
// the fixture's ManualClock for its timers, creators run when the test says
// (or each on a thread of its own).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "dogpile/detail/async_call.hpp"
#include "dogpile/detail/loop.hpp"
#include "dogpile/region.hpp"

namespace dogpile::test {

class TestLoop final : public dogpile::detail::Loop {
 public:
  /// `threads`: each creator runs on a thread of its own, at once.
  explicit TestLoop(dogpile::ManualClock& clock, bool threads = false)
      : clock_(clock), threads_(threads) {}
  ~TestLoop() override {
    for (auto& t : running_) t.join();
  }

  void post(std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(fn));
  }
  std::function<void()> post_at(dogpile::SteadyTime at, dogpile::Duration,
                                std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    const auto it = timers_.emplace(at, std::move(fn));
    const auto id = ++next_timer_;
    live_[id] = it;
    return [this, id] {
      std::lock_guard lock(mutex_);
      if (auto found = live_.find(id); found != live_.end()) {
        timers_.erase(found->second);
        live_.erase(found);
      }
    };
  }
  /// Timers set and not yet fired or cancelled.
  [[nodiscard]] std::size_t timers() const {
    std::lock_guard lock(mutex_);
    return timers_.size();
  }
  void run_blocking(std::function<void()> fn) override { fn(); }
  void run_creator(std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    if (threads_) {
      running_.emplace_back(std::move(fn));
    } else {
      creators_.push_back(std::move(fn));
    }
  }
  [[nodiscard]] bool requests_in_place() const override { return true; }

  /// Runs what was posted, and what that posts, until nothing is left.
  void run() {
    for (;;) {
      std::function<void()> next;
      {
        std::lock_guard lock(mutex_);
        if (queue_.empty()) return;
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      next();
    }
  }
  /// Moves the clock, firing the timers now due, and runs.
  void advance(dogpile::Duration step) {
    clock_.advance(step);
    {
      std::lock_guard lock(mutex_);
      const dogpile::SteadyTime now = clock_.steady_now();
      while (!timers_.empty() && timers_.begin()->first <= now) {
        queue_.push_back(std::move(timers_.begin()->second));
        std::erase_if(live_, [&](const auto& l) { return l.second == timers_.begin(); });
        timers_.erase(timers_.begin());
      }
    }
    run();
  }
  /// Runs the creators handed over so far, then the loop.
  std::size_t run_creators() {
    std::deque<std::function<void()>> now;
    {
      std::lock_guard lock(mutex_);
      now.swap(creators_);
    }
    for (auto& fn : now) fn();
    run();
    return now.size();
  }
  [[nodiscard]] std::size_t creators() const {
    std::lock_guard lock(mutex_);
    return creators_.size();
  }

 private:
  dogpile::ManualClock& clock_;
  mutable std::mutex mutex_;
  std::deque<std::function<void()>> queue_;
  using Timers = std::multimap<dogpile::SteadyTime, std::function<void()>>;
  Timers timers_;
  std::map<std::uint64_t, Timers::iterator> live_;
  std::uint64_t next_timer_ = 0;
  std::deque<std::function<void()>> creators_;
  const bool threads_;
  std::vector<std::thread> running_;
};

// What asynchronous calls ended with.
struct Results {
  int values = 0;
  int timeouts = 0;
  int errors = 0;
  std::vector<std::string> seen;
  std::optional<dogpile::WaitTimeout::Reason> reason;
  auto done() {
    return [this](std::exception_ptr error, std::optional<std::string> value) {
      if (!error) {
        ++values;
        seen.push_back(*value);
        return;
      }
      try {
        std::rethrow_exception(error);
      } catch (const dogpile::WaitTimeout& e) {
        ++timeouts;
        reason = e.reason();
      } catch (...) {
        ++errors;
      }
    };
  }
  [[nodiscard]] int ended() const { return values + timeouts + errors; }
};

template <class Creator>
void start(dogpile::CacheRegion& region, TestLoop& loop, std::string_view key, Creator creator,
           Results& results, dogpile::CallOptions options = {}) {
  dogpile::detail::start_get_or_create<std::string, dogpile::detail::Making::now>(
      region, loop, key, std::move(creator), std::move(options), dogpile::detail::AlwaysCache{},
      results.done());
}

}  // namespace dogpile::test
