// SPDX-License-Identifier: MIT
#include "dogpile/executor.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>

#include "base/fork.hpp"

namespace dogpile {

struct ThreadPoolExecutor::Impl : detail::ForkAware {
  Impl(std::size_t threads, std::size_t queue_capacity)
      : size(threads), capacity(queue_capacity), registration(*this) {}

  ~Impl() {
    registration.reset();
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    ready.notify_all();
    for (auto& t : workers) t.join();
  }

  // Threads start with the first task, and again in a forked child.
  void start_locked() {
    if (!workers.empty()) return;
    workers.reserve(size);
    for (std::size_t i = 0; i < size; ++i) workers.emplace_back([this] { run(); });
  }

  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex);
        ready.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, and nothing left to run
        task = std::move(queue.front());
        queue.pop_front();
      }
      try {
        task();
      } catch (...) {
        // A task reports its own errors.
      }
    }
  }

  // The parent's threads do not exist here and its tasks are its own: leak
  // them both (never join, never run).
  void after_fork_in_child() noexcept override {
    new (&workers) std::vector<std::thread>();
    new (&queue) std::deque<std::function<void()>>();
    new (&mutex) std::mutex;
    new (&ready) std::condition_variable;
  }

  const std::size_t size;
  const std::size_t capacity;
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::function<void()>> queue;
  bool stopping = false;
  std::vector<std::thread> workers;
  detail::ForkRegistration registration;
};

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t threads, std::size_t queue_capacity) {
  if (threads == 0 || queue_capacity == 0) {
    throw std::invalid_argument(
        "dogpile::ThreadPoolExecutor: threads and queue_capacity must be at least 1");
  }
  impl_ = std::make_unique<Impl>(threads, queue_capacity);
}

ThreadPoolExecutor::~ThreadPoolExecutor() = default;

bool ThreadPoolExecutor::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping || impl_->queue.size() >= impl_->capacity) return false;
    impl_->start_locked();
    impl_->queue.push_back(std::move(task));
  }
  impl_->ready.notify_one();
  return true;
}

std::size_t ThreadPoolExecutor::queued() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->queue.size();
}

}  // namespace dogpile
