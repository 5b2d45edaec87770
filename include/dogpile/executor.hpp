// SPDX-License-Identifier: MIT
// dogpile/executor.hpp — where background regenerations run.
//
// With RegionOptions::background_refresh on, the caller that wins the lock of
// a stale key returns the stale value at once and hands the creation to an
// `Executor`. The default is a `ThreadPoolExecutor` with 2 threads and a
// queue of 64; bring your own (your service's pool) by implementing
// try_submit.
//
//   auto pool = std::make_shared<dogpile::ThreadPoolExecutor>(4, 256);
//   dogpile::CacheRegion region(backend, {.expiration = std::chrono::minutes(1),
//                                         .background_refresh = true,
//                                         .executor = pool});
//
// Types: Executor (interface), ThreadPoolExecutor.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

namespace dogpile {

class Executor {
 public:
  virtual ~Executor() = default;
  /// Runs `task` soon, on another thread. Returns false, without running it,
  /// if it cannot take the task now (queue full, shutting down): the caller
  /// then does the work itself. Must be thread-safe; must not block for long.
  [[nodiscard]] virtual bool try_submit(std::function<void()> task) = 0;
};

/// A fixed set of threads and a bounded queue. Tasks that throw have their
/// exception swallowed (dogpile's tasks report their own errors). Fork-safe:
/// in a child the parent's queued tasks are dropped unrun (they are the
/// parent's work) and new threads start with the next task.
class ThreadPoolExecutor final : public Executor {
 public:
  /// Throws std::invalid_argument if `threads` or `queue_capacity` is 0.
  explicit ThreadPoolExecutor(std::size_t threads = 2, std::size_t queue_capacity = 64);
  /// Runs the tasks already queued, then joins the threads.
  ~ThreadPoolExecutor() override;
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;

  /// False if the queue holds queue_capacity tasks. Never blocks beyond a mutex.
  [[nodiscard]] bool try_submit(std::function<void()> task) override;

  /// Tasks queued, not yet started. Thread-safe.
  [[nodiscard]] std::size_t queued() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dogpile
