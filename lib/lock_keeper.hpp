// Keeps distributed locks alive while their creators run (internal).
//
// A creator may outlive its lock's time to live. The keeper extends every
// registered lock every `interval` from a background thread, so a slow but
// live creator keeps its lock, while the lock of a crashed process (whose
// keeper died with it) expires after its time to live.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "dogpile/backend.hpp"

namespace dogpile::detail {

class LockKeeper {
 public:
  using Clock = std::chrono::steady_clock;
  /// Called (from the keeper thread) when an extension fails: `lost` is
  /// true if the lock was taken over, false if the backend failed (then
  /// `error` says how). Must not throw.
  using Report = std::function<void(const std::string& key, bool lost, const char* error)>;

  explicit LockKeeper(Report report);
  /// Joins the thread. Every Ticket must have been destroyed.
  ~LockKeeper();
  LockKeeper(const LockKeeper&) = delete;
  LockKeeper& operator=(const LockKeeper&) = delete;

  struct Entry {
    DistributedLock* lock;
    std::string key;
    Clock::duration interval;
    Clock::time_point due;
    bool alive = true;
    bool busy = false;  // being extended, outside the mutex
  };

  /// Unregisters its lock on destruction; after that the keeper no longer
  /// touches the lock (an extension of it in progress is waited for; others
  /// are not).
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
  /// ticket is destroyed. Starts the thread on first use.
  [[nodiscard]] Ticket keep(DistributedLock& lock, std::string key, Clock::duration interval);

  /// The extension interval for a lock with time to live `ttl`: a third of
  /// (ttl - 1 s), because memcached counts expiry in whole seconds and may
  /// expire an item up to a second early; the other two thirds are slack for
  /// a keeper (or a server) that is slow to run.
  [[nodiscard]] static Clock::duration interval_for(Ttl ttl) noexcept;

 private:
  void run();

  Report report_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable extended_;  // an extension finished
  std::list<Entry> entries_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dogpile::detail
