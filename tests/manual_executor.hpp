// SPDX-License-Identifier: MIT
// An Executor for tests: it queues tasks and runs them only when told to, so
// a test sees the moment between "handed to the background" and "done".
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>

#include "dogpile/executor.hpp"

namespace dogpile::test {

class ManualExecutor final : public Executor {
 public:
  /// Accepts at most `capacity` queued tasks.
  explicit ManualExecutor(std::size_t capacity = 16) : capacity_(capacity) {}

  bool try_submit(std::function<void()> task) override {
    std::lock_guard lock(mutex_);
    if (tasks_.size() >= capacity_) return false;
    tasks_.push_back(std::move(task));
    return true;
  }
  /// Runs the queued tasks (and any they queue) in this thread; how many ran.
  std::size_t run_all() {
    std::size_t ran = 0;
    for (;;) {
      std::function<void()> task;
      {
        std::lock_guard lock(mutex_);
        if (tasks_.empty()) return ran;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
      ++ran;
    }
  }
  /// Destroys the queued tasks without running them.
  void drop_all() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard lock(mutex_);
      dropped.swap(tasks_);
    }
  }
  std::size_t queued() const {
    std::lock_guard lock(mutex_);
    return tasks_.size();
  }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<std::function<void()>> tasks_;
};

}  // namespace dogpile::test
