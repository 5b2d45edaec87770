// dogpile/backend.hpp — where a CacheRegion keeps its values and its locks.
//
// A `Backend` does I/O only: it stores opaque items under keys that are
// already valid for it (CacheRegion maps user keys first), and it makes
// `DistributedLock`s. Expiry decisions, locking order, retries and error
// policy belong to CacheRegion, not to a backend.
//
//   auto backend = std::make_shared<dogpile::MemoryBackend>();
//   backend->set("k", dogpile::Item{"bytes", 0}, std::chrono::seconds(60));
//   std::optional<dogpile::Item> item = backend->get("k");
//
// Types: Item, KeyedItem, BackendError, DistributedLock, Backend.
//
// Errors: a backend reports I/O failures (server down, timeout, item too
// large, ...) by throwing BackendError; "not found" and "already exists" are
// ordinary results. Every member must be thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/detail/function_ref.hpp"

namespace dogpile {

/// One stored item: bytes plus the 32-bit flags memcached keeps beside them.
struct Item {
  std::string data;
  std::uint32_t flags = 0;

  friend bool operator==(const Item&, const Item&) = default;
};

/// A key and the item to store under it, for Backend::set_multi.
struct KeyedItem {
  std::string_view key;
  const Item* item;
};

/// Time to live of a stored item, in whole seconds; 0 means "never expires".
using Ttl = std::chrono::seconds;

/// An I/O failure of a backend: the server is unreachable or slow, refused the
/// item, or answered something unexpected. `what()` says which operation on
/// which key failed and why.
class BackendError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A lock shared by every process (and host) that uses the same backend.
///
/// It is held for at most `ttl()` unless extended, so a holder that dies
/// cannot block others for longer. Releasing never removes a lock that
/// another holder took after this one's expired. Within a process, one
/// object also works like a mutex: the threads that share it exclude each
/// other first, and only one of them at a time asks the backend. Unlike a
/// std::mutex it may be released by another thread than the one that took
/// it (a background regeneration releases its caller's lock).
/// Satisfies dogpile::Lockable, so it can be the mutex of a Dogpile.
///
/// Implementations provide try_acquire(), release_acquired(), extend() and
/// ttl(), and call release_if_held() from their destructor.
class DistributedLock {
 public:
  virtual ~DistributedLock() = default;
  DistributedLock(const DistributedLock&) = delete;
  DistributedLock& operator=(const DistributedLock&) = delete;

  /// One attempt to take the lock: false at once if another thread of this
  /// process holds this object, else one request to the backend. Throws
  /// BackendError if the backend cannot be asked.
  [[nodiscard]] bool try_lock();

  /// Blocks until the lock is taken: waits for the other threads of this
  /// process that share this object, then polls the backend every 1 ms,
  /// doubling to 50 ms (the holder may be another host, so there is nothing
  /// to wait on). Throws BackendError.
  void lock();

  /// Releases the lock if it is held. Returns false if it was not held, or
  /// if the lock had expired (and possibly been taken by
  /// someone else), in which case nothing is removed. Throws BackendError
  /// (the lock is then released in this process and expires in the backend).
  bool release();

  /// release(), with errors swallowed: the lock then expires on its own
  /// after ttl(). Never throws.
  void unlock() noexcept;

  /// Resets the lock's time to live if this holder still has it; false if
  /// the lock was lost. May be called from another thread than the holder's
  /// (a keeper), but not at the same time as release(). Throws BackendError.
  virtual bool extend() = 0;

  /// The lock's time to live.
  [[nodiscard]] virtual Ttl ttl() const noexcept = 0;

 protected:
  DistributedLock() = default;
  /// One attempt at the backend lock; true if taken. Throws BackendError.
  virtual bool try_acquire() = 0;
  /// Removes the backend lock if it still holds this holder's token; false if
  /// it did not. Throws BackendError.
  virtual bool release_acquired() = 0;
  /// For destructors of implementations: releases the lock if it is held.
  void release_if_held() noexcept {
    if (held_) unlock();
  }

 private:
  bool claim() noexcept;
  std::atomic<bool> busy_{false};  // this object is held, or being tried, in this process
  bool held_ = false;              // the backend lock is held (written under busy_)
};

class Backend {
 public:
  virtual ~Backend() = default;

  /// The item under `key`, or nullopt if there is none. Throws BackendError.
  [[nodiscard]] virtual std::optional<Item> get(std::string_view key) = 0;

  /// Calls `visit(data, flags)` with the item under `key`, if there is one,
  /// without copying it where the backend can (memcached: its own buffer);
  /// returns whether there was one. The view is valid only during the call.
  /// The default calls get(). Throws BackendError, and what `visit` throws.
  virtual bool get_view(
      std::string_view key,
      detail::FunctionRef<void(std::string_view data, std::uint32_t flags)> visit);

  /// Stores `item` under `key`, replacing any item there. Throws BackendError.
  virtual void set(std::string_view key, const Item& item, Ttl ttl) = 0;

  /// Stores `item` only if no item is under `key`; false if one was.
  /// Throws BackendError.
  [[nodiscard]] virtual bool add(std::string_view key, const Item& item, Ttl ttl) = 0;

  /// Removes the item under `key`; false if there was none. Throws BackendError.
  virtual bool remove(std::string_view key) = 0;

  /// The items under `keys`, in the same order (nullopt where missing), in as
  /// few round trips as the backend can. The default calls get() per key.
  /// Throws BackendError.
  [[nodiscard]] virtual std::vector<std::optional<Item>> get_multi(
      std::span<const std::string_view> keys);

  /// Stores every item. The default calls set() per item. Throws BackendError
  /// (some items may have been stored).
  virtual void set_multi(std::span<const KeyedItem> items, Ttl ttl);

  /// Removes every key. The default calls remove() per key. Throws BackendError.
  virtual void remove_multi(std::span<const std::string_view> keys);

  /// A lock that belongs with the value under `key`: for a clustered backend,
  /// held on the server that stores that value. Not taken yet. Never blocks.
  [[nodiscard]] virtual std::unique_ptr<DistributedLock> make_lock(std::string_view key,
                                                                   Ttl ttl) = 0;
};

}  // namespace dogpile
