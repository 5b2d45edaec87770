// SPDX-License-Identifier: MIT
// Keeps distributed locks alive while their creators run, and runs the
// region's periodic chores (internal).
//
// A creator may outlive its lock's time to live. The keeper extends every
// registered lock every `interval` from a background thread, so a slow but
// live creator keeps its lock, while the lock of a crashed process (whose
// keeper died with it) expires after its time to live. A creator that runs
// past its `max_creation` is declared hung: its lock is no longer extended
// (so another process can take over once it expires), and `on_hung` runs.
// Timing is on the region's Clock timer (steady time in production; a
// ManualClock in tests).
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "base/fork.hpp"
#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "engine/metrics.hpp"

namespace dogpile::detail {

class LockKeeper : ForkAware {
 public:
  enum class Event {
    lost,    ///< an extension found the lock gone or taken over
    failed,  ///< an extension failed (the backend could not be asked); `error` says why
    hung,    ///< the creator ran past its max_creation; the lock is no longer extended
  };
  /// Called from the keeper thread, with the error for Event::failed (else
  /// nullptr). Must not throw.
  using Report =
      std::function<void(const std::string& key, Event event, const std::exception* error)>;

  /// Each extension is recorded in `metrics`, if given.
  LockKeeper(const Clock& clock, Report report, Metrics* metrics = nullptr);
  /// Stops and joins the thread. Every Ticket must have been destroyed.
  ~LockKeeper();
  LockKeeper(const LockKeeper&) = delete;
  LockKeeper& operator=(const LockKeeper&) = delete;

  struct Entry {
    DistributedLock* lock;
    std::string key;
    Duration interval;
    SteadyTime due;
    SteadyTime hung_at;  // SteadyTime::max(): never
    std::function<void()> on_hung;
    bool alive = true;
    bool busy = false;  // being extended, outside the mutex
  };

  /// Unregisters its lock on destruction; after that the keeper no longer
  /// touches the lock (an extension of it in progress is waited for).
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept
        : keeper_(std::exchange(other.keeper_, nullptr)), entry_(other.entry_) {}
    Ticket& operator=(Ticket&& other) noexcept {
      if (this != &other) {
        reset();
        keeper_ = std::exchange(other.keeper_, nullptr);
        entry_ = other.entry_;
      }
      return *this;
    }
    ~Ticket() { reset(); }
    void reset() noexcept;

   private:
    friend class LockKeeper;
    Ticket(LockKeeper* keeper, std::list<Entry>::iterator entry) : keeper_(keeper), entry_(entry) {}
    LockKeeper* keeper_ = nullptr;
    std::list<Entry>::iterator entry_;
  };

  /// Extends `lock` (held, named `key` in reports) every `interval` until the
  /// ticket is destroyed, or until `max_creation` has passed (then reports
  /// `hung` and calls `on_hung`). Starts the thread on first use.
  [[nodiscard]] Ticket keep(DistributedLock& lock, std::string key, Duration interval,
                            std::optional<Duration> max_creation = std::nullopt,
                            std::function<void()> on_hung = {});

  /// Runs `chore` on the keeper thread after `delay`, then again after each
  /// delay it returns, until it returns nullopt. Chores run one at a time,
  /// between extensions; they must not throw.
  void schedule(Duration delay, std::function<std::optional<Duration>()> chore);

  /// The extension interval for a lock with time to live `ttl`: a third of
  /// (ttl - 1 s), because memcached counts expiry in whole seconds and may
  /// expire an item up to a second early; the other two thirds are slack for
  /// a keeper (or a server) that is slow to run.
  [[nodiscard]] static Duration interval_for(Ttl ttl) noexcept;

  /// The child of a fork has no keeper thread and extends none of its
  /// parent's locks: everything is forgotten; a new thread starts on use.
  void after_fork_in_child() noexcept override;

 private:
  struct Chore {
    SteadyTime due;
    std::function<std::optional<Duration>()> run;
  };
  void run(std::stop_token stop);
  void start_locked(SteadyTime due);  // the thread runs, and wakes by `due`

  const Clock& clock_;
  Report report_;
  Metrics* metrics_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::condition_variable extended_;  // an extension finished
  bool changed_ = false;              // entries or chores changed: recompute the next wake
  // When the thread wakes next (max: when told). A lock or chore due later
  // does not wake it: registering many locks costs no rescan each.
  SteadyTime next_wake_ = SteadyTime::min();
  std::list<Entry> entries_;
  std::list<Chore> chores_;
  std::jthread thread_;
  ForkRegistration registration_;
};

}  // namespace dogpile::detail
