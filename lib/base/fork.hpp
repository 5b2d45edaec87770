// SPDX-License-Identifier: MIT
// Keeping per-process resources out of a forked child (internal).
//
// After fork() the child has one thread and a copy of the parent's memory:
// its connections are the parent's sockets, its mutexes may be held by
// threads that no longer exist, its queues hold the parent's work. A
// ForkAware object registers once; a process-wide pthread_atfork handler
// calls after_fork_in_child() on every registered object in the child, while
// it is still single-threaded, before fork() returns there.
#pragma once

#include <cstdint>

namespace dogpile::detail {

class ForkAware {
 public:
  /// In the child, before fork() returns: drop everything that belongs to the
  /// parent (leak it rather than use it: closing a shared socket politely,
  /// releasing a lock or running a queued task would act for the parent) and
  /// start afresh. Must not lock a mutex that a thread of the parent may have
  /// held; re-initialise such mutexes instead. Must not throw.
  virtual void after_fork_in_child() noexcept = 0;

 protected:
  ForkAware() = default;
  ~ForkAware() = default;
};

/// Registers `object` for its lifetime. Unregister first thing in the owner's
/// destructor (reset()), so that a fork during its destruction does not reach
/// a half-destroyed object.
class ForkRegistration {
 public:
  explicit ForkRegistration(ForkAware& object);
  ~ForkRegistration() { reset(); }
  ForkRegistration(const ForkRegistration&) = delete;
  ForkRegistration& operator=(const ForkRegistration&) = delete;
  void reset() noexcept;

 private:
  ForkAware* object_;
};

/// How many forks separate this process from the first one that loaded
/// dogpile (0 there, 1 in a child, 2 in a grandchild...). Never blocks.
[[nodiscard]] std::uint64_t fork_generation() noexcept;

}  // namespace dogpile::detail
