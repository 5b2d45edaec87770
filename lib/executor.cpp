#include "dogpile/executor.hpp"

#include <stdexcept>

namespace dogpile {

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t threads, std::size_t queue_capacity)
    : capacity_(queue_capacity) {
  if (threads == 0 || queue_capacity == 0) {
    throw std::invalid_argument(
        "dogpile::ThreadPoolExecutor: threads and queue_capacity must be at least 1");
  }
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

ThreadPoolExecutor::~ThreadPoolExecutor() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& t : threads_) t.join();
}

bool ThreadPoolExecutor::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= capacity_) return false;
    queue_.push_back(std::move(task));
  }
  ready_.notify_one();
  return true;
}

std::size_t ThreadPoolExecutor::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void ThreadPoolExecutor::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      task();
    } catch (...) {
      // A task reports its own errors.
    }
  }
}

}  // namespace dogpile
