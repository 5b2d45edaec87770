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
// To write one, implement get, set, add, remove and make_lock (and, for a
// cluster, place a lock on its value's server). Everything else has a
// default built from those five; override what your store does better:
//   - versions: gets() and cas(), so that a creation never stores over a
//     value written while it ran (without them only stores into empty keys
//     are fenced);
//   - the lease-aware batch operations the region's engine calls (read,
//     claim, confirm, poll, store, release): one request each for a whole
//     batch, or the lease granted in the read itself, as memcached's meta
//     protocol does;
//   - server_time(), so that every host judges ages on one clock.
//
// Types: Item, KeyedItem, Ttl, Cas, BackendError, DistributedLock, LockInfo,
// LeaseState, Fence, LeaseRequest, LeaseSlot, ServerTime, Backend.
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

#include "dogpile/clock.hpp"
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

/// An item's version (memcached's CAS unique): it changes whenever the item is
/// written. 0: unknown.
using Cas = std::uint64_t;

/// An I/O failure of a backend: the server is unreachable or slow, refused the
/// item, or answered something unexpected. `what()` says which operation on
/// which key failed and why.
class BackendError : public std::runtime_error {
 public:
  /// `server` ("host:port") and `code` (a stable upper-case name of what
  /// failed) may be empty when unknown.
  explicit BackendError(const std::string& what, std::string server = {}, std::string code = {})
      : std::runtime_error(what),
        origin_(std::make_shared<const Origin>(Origin{std::move(server), std::move(code)})) {}

  /// The server that failed, "host:port"; empty if unknown.
  [[nodiscard]] const std::string& server() const noexcept { return origin_->server; }
  /// What failed, for grouping and alerting: for the classic transport
  /// libmemcached's result name ("CONNECTION_FAILURE", "TIMEOUT",
  /// "ITEM_TOO_BIG", ...); for the meta transport "CONNECTION_FAILURE",
  /// "TIMEOUT", "SERVER_MARKED_DOWN", "PROTOCOL_ERROR", "CLIENT_ERROR",
  /// "SERVER_ERROR"; empty if unknown.
  [[nodiscard]] const std::string& code() const noexcept { return origin_->code; }

 private:
  struct Origin {
    std::string server;
    std::string code;
  };
  std::shared_ptr<const Origin> origin_;  // shared: copying an exception must not throw
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
  /// someone else), in which case nothing is removed. Throws BackendError;
  /// the lock is then still held, and release() may be tried again (unlock()
  /// and the destructor give up: it expires in the backend).
  bool release();

  /// Whether this object holds the lock.
  [[nodiscard]] bool held() const noexcept { return held_; }

  /// Gives the lock up in this process without a request: it expires in the
  /// backend after ttl(). For a holder that cannot reach the backend.
  void abandon() noexcept { forget(); }

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
  void forget() noexcept;          // released in this process
  std::atomic<bool> busy_{false};  // this object is held, or being tried, in this process
  bool held_ = false;              // the backend lock is held (written under busy_)
};

/// What a lock tells those who wait for its holder: when the holder started,
/// and how long the previous creation of the value took, so they can sleep
/// until the value is due. Either may be unknown.
struct LockInfo {
  TimePoint started_at{};                 ///< fleet clock; the epoch: unknown
  std::chrono::microseconds expected{0};  ///< 0: unknown
  /// How far the holder's clock may be from the fleet's, so started_at too.
  std::chrono::microseconds clock_error{0};
};

/// The right to regenerate one key, as an operation found it.
enum class LeaseState : std::uint8_t {
  unknown,  ///< not asked
  won,      ///< this caller holds it now (LeaseSlot::lock is set)
  held,     ///< another caller holds it
  free,     ///< nobody holds it
};

/// How a store is fenced against writes made since its lease was granted.
struct Fence {
  enum class Kind : std::uint8_t {
    none,     ///< unconditional: replace whatever is there
    absent,   ///< only if there is no item (`add`)
    version,  ///< only if the item is still at `version` (`cas`)
  };
  Kind kind = Kind::none;
  Cas version = 0;
};

/// What the engine asks of a lease-aware operation.
struct LeaseRequest {
  /// Grant the lease in the read when there is no item (meta protocol `N`).
  bool claim_if_missing = false;
  /// Grant the lease in the read when the item's remaining time to live is
  /// below this (meta protocol `R`): the item is stale.
  std::optional<Ttl> claim_if_ttl_below;
  /// The lease's (lock's) time to live.
  Ttl ttl = std::chrono::seconds(30);
  /// Written into the lock that a claim creates.
  LockInfo info;
};

/// One key of a lease-aware operation: what the engine asks, and what the
/// backend answers.
struct LeaseSlot {
  std::string_view key;
  /// read, confirm, poll: the item under the key (not filled by read_view,
  /// whose visitor sees the bytes), and its version if the backend knows it.
  std::optional<Item> item;
  Cas cas = 0;
  /// read, claim, poll: the lease as the operation left it.
  LeaseState lease = LeaseState::unknown;
  /// lease == held: what the holder's lock says, as far as the backend knows.
  LockInfo holder;
  /// lease == won: the lock, extended by the region while its creator runs
  /// and ended by release().
  std::unique_ptr<DistributedLock> lock;
  /// How store() must fence this key's value: set by the operation that won
  /// the lease with the item at hand (read with a claim, or confirm).
  Fence fence;
  /// store: the item to store, its time to live, and whether it was stored
  /// (false: fenced out, something was written since).
  const Item* value = nullptr;
  Ttl ttl{};
  bool stored = false;
  /// release: the lease had been lost (expired, evicted, taken over) before
  /// it was ended; nothing was removed.
  bool lost = false;
  /// claim, poll (read grants are confirmed by nature): the operation that
  /// won the lease read the item with it (item, cas and fence are current),
  /// so confirm() is not needed.
  bool confirmed = false;
  /// read, claim, poll: the backend marks the item stale whatever its age (a
  /// per-key soft invalidation: mark_stale()). Set before read_view calls its
  /// visitor.
  bool marked_stale = false;
};

/// A server's clock reading: the server's time is in
/// [time, time + resolution) at some instant during the request.
struct ServerTime {
  TimePoint time;
  Duration resolution{};
};

/// The deadline of the region call that the calling thread is making, if it
/// has one (CallOptions::deadline, RegionOptions::deadline). A backend should
/// end each request by then, throwing BackendError if it cannot.
[[nodiscard]] std::optional<std::chrono::steady_clock::time_point> request_deadline() noexcept;

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

  // --- Versions. -----------------------------------------------------------

  /// The item under `key` and its version (`cas`, 0 if unknown). The default
  /// calls get() and reports version 0. Throws BackendError.
  [[nodiscard]] virtual std::optional<Item> gets(std::string_view key, Cas& cas);

  /// Stores `item` only if the item under `key` is still at `version`; false
  /// if it changed or is gone. Backends whose gets() reports versions must
  /// implement it; the default throws BackendError.
  [[nodiscard]] virtual bool cas(std::string_view key, const Item& item, Ttl ttl, Cas version);

  // --- The engine's lease-aware operations. --------------------------------
  // Each takes a batch of slots and answers in them; a failure throws
  // BackendError for the whole batch. The defaults are built from the members
  // above, one request per key (and the lock's own requests).

  /// The hot path: reads one key, calling `visit(data, flags)` with its item
  /// (without a copy where it can), and fills the slot's cas, lease, holder,
  /// lock and fence as far as the read tells them. Returns whether there was
  /// an item. The default calls get_view(); the lease stays unknown.
  virtual bool read_view(
      LeaseSlot& slot, const LeaseRequest& request,
      detail::FunctionRef<void(std::string_view data, std::uint32_t flags)> visit);

  /// read_view for many keys, the items copied into the slots. The default
  /// calls get_multi().
  virtual void read(std::span<LeaseSlot> slots, const LeaseRequest& request);

  /// Claims the lease of each slot: won (the slot's lock is set) or held.
  /// The default takes make_lock()->try_lock() per slot.
  virtual void claim(std::span<LeaseSlot> slots, const LeaseRequest& request);

  /// For slots whose lease this caller won: reads the item again (someone may
  /// have stored one before the lease was granted) and sets the fence that
  /// store() will use. The default calls gets() per slot.
  virtual void confirm(std::span<LeaseSlot> slots);

  /// For a caller waiting on another's lease: the item, and whether the lease
  /// is still held (with what its lock says). The default calls gets() and,
  /// where there is no item, tries the lease (so it may report won).
  virtual void poll(std::span<LeaseSlot> slots, const LeaseRequest& request);

  /// Stores each slot's value, fenced by its fence; sets `stored`. The
  /// default calls add(), cas() or set().
  virtual void store(std::span<LeaseSlot> slots);

  /// Ends each slot's lease (its lock), if it is still held. Never throws for
  /// a lease that was lost; throws BackendError if the backend cannot be asked
  /// (the leases not ended are still held: the region tries them again, then
  /// lets them expire). The default calls lock->release().
  virtual void release(std::span<LeaseSlot> slots);

  /// Whether mark_stale() is supported.
  [[nodiscard]] virtual bool can_mark_stale() const noexcept { return false; }

  /// Marks the item under `key` stale in place, where the store can (meta
  /// protocol: `md k I`): readers are then told so (LeaseSlot::marked_stale),
  /// and one of them may refresh it. The item then lives `keep_for` (so a
  /// refresher that died holds the refresh no longer). False if there was no
  /// item. The default throws std::logic_error (the region rewrites the value
  /// instead). Throws BackendError.
  virtual bool mark_stale(std::string_view key, Ttl keep_for);

  /// The clock of the server that holds `key`, for reconciling hosts whose
  /// clocks disagree. nullopt (the default): there is no server clock; every
  /// caller's own clock is trusted. Throws BackendError.
  [[nodiscard]] virtual std::optional<ServerTime> server_time(std::string_view key);
};

}  // namespace dogpile
