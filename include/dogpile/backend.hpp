// SPDX-License-Identifier: MIT
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
// Ten operations, each over a batch of keys and each taking a Request (the
// call's deadline and cancellation): read, write, erase and make_lock are
// required; claim, confirm, poll, release, mark_stale and server_time have
// defaults built on those. get, set, add, cas, remove and their multi forms
// are written once, on read, write and erase. Override what your store does
// better: versions (Cas) so that a creation never stores over a value
// written while it ran; leases granted in the read itself, as memcached's
// meta protocol does; a server clock, so every host judges ages alike.
//
// Types: Item, KeyedItem, Ttl, Cas, BackendError, Request, DistributedLock,
// LockInfo, LeaseState, Fence, Lease, LeaseRequest, KeyRead, KeyWrite,
// KeyErase, LeaseEnd, ServerTime, Backend.
//
// Errors: a backend reports I/O failures (server down, timeout, item too
// large, ...) by throwing BackendError; "not found" and "already exists" are
// ordinary results. Every member must be thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/clock.hpp"
#include "dogpile/detail/function_ref.hpp"

namespace dogpile {

namespace detail {
class Loop;  // dogpile/detail/loop.hpp
}  // namespace detail

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
  explicit BackendError(const std::string& what, std::string server = {}, std::string code = {},
                        bool moved = false)
      : std::runtime_error(what),
        origin_(std::make_shared<const Origin>(Origin{std::move(server), std::move(code), moved})) {
  }

  /// The server that failed, "host:port"; empty if unknown.
  [[nodiscard]] const std::string& server() const noexcept { return origin_->server; }
  /// What failed, for grouping and alerting: for the classic transport
  /// libmemcached's result name ("CONNECTION_FAILURE", "TIMEOUT",
  /// "ITEM_TOO_BIG", ...); for the meta transport "CONNECTION_FAILURE",
  /// "TIMEOUT", "SERVER_MARKED_DOWN", "PROTOCOL_ERROR", "CLIENT_ERROR",
  /// "SERVER_ERROR"; empty if unknown.
  [[nodiscard]] const std::string& code() const noexcept { return origin_->code; }
  /// The failure marked the server down, and its keys now go elsewhere (a
  /// gutter, --GUTTER): the request may be made again at once.
  [[nodiscard]] bool moved() const noexcept { return origin_->moved; }

 private:
  struct Origin {
    std::string server;
    std::string code;
    bool moved = false;
  };
  std::shared_ptr<const Origin> origin_;  // shared: copying an exception must not throw
};

/// What every request to a backend carries: when it must be done, and what
/// may cancel it. A backend ends each request by `deadline` and once `stop`
/// is requested, throwing BackendError (the server is not at fault).
struct Request {
  std::optional<std::chrono::steady_clock::time_point> deadline{};
  std::stop_token stop{};
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
  [[nodiscard]] bool try_lock(const Request& request = {});

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
  bool release(const Request& request = {});

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
  virtual bool extend(const Request& request = {}) = 0;

  /// The lock's time to live.
  [[nodiscard]] virtual Ttl ttl() const noexcept = 0;

 protected:
  DistributedLock() = default;
  /// One attempt at the backend lock; true if taken. Throws BackendError.
  virtual bool try_acquire(const Request& request) = 0;
  /// Removes the backend lock if it still holds this holder's token; false if
  /// it did not. Throws BackendError.
  virtual bool release_acquired(const Request& request) = 0;
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
  won,      ///< this caller holds it now (Lease::lock is set)
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

/// The right to regenerate one key, as the operations that touched it left
/// it. The caller owns it; operations fill it in place.
struct Lease {
  LeaseState state = LeaseState::unknown;
  /// state == held: what the holder's lock says, as far as the backend knows.
  LockInfo holder{};
  /// state == won: the lock, extended while its creator runs and ended by
  /// release().
  std::unique_ptr<DistributedLock> lock{};
  /// How a store under the lease is fenced: set by the operation that won it
  /// with the item at hand (a read with a grant, or confirm).
  Fence fence{};
  /// The operation that won the lease read the item with it (item, cas and
  /// fence are current): confirm() is not needed.
  bool read_with = false;

  /// One attempt at `lock` (a lock item, not a lease granted in a read):
  /// won, and the lock kept here; or held by another. Throws BackendError.
  bool try_take(std::unique_ptr<DistributedLock> lock, const Request& request);
};

/// What a read may ask for besides the item: the lease, granted in the read
/// where the backend can (memcached's meta protocol), and what a lock made
/// by claim() holds.
struct LeaseRequest {
  /// Grant the lease in the read when there is no item (meta protocol `N`).
  bool claim_if_missing = false;
  /// Grant the lease in the read when the item's remaining time to live is
  /// below this (meta protocol `R`): the item is stale.
  std::optional<Ttl> claim_if_ttl_below{};
  /// The lease's (lock's) time to live.
  Ttl ttl = std::chrono::seconds(30);
  /// Written into the lock that a claim creates.
  LockInfo info{};
  /// read: each item's version (KeyRead::cas) is what is wanted, not its
  /// value. A backend that can ask for the version alone does (memcached's
  /// meta protocol: `mg k c`, a header-sized reply) and leaves KeyRead::item
  /// empty; others read the item whole. No lease is asked with it.
  bool version_only = false;
};

/// One key of read, claim, confirm or poll: the key and where its lease
/// goes, then what the backend answered.
struct KeyRead {
  std::string_view key{};
  /// Required by claim, confirm and poll; read: null when no lease is asked.
  Lease* lease = nullptr;
  /// The item (not filled when read() visits items instead), and its
  /// version if the backend knows it (0: unknown).
  std::optional<Item> item{};
  Cas cas = 0;
  /// The backend marks the item stale whatever its age (mark_stale(): a
  /// per-key soft invalidation).
  bool marked_stale = false;
};

/// One key of write: the item, its time to live and its fence; whether it
/// was stored (false: fenced out, the key was written meanwhile).
struct KeyWrite {
  std::string_view key{};
  const Item* item = nullptr;
  Ttl ttl{};
  Fence fence{};  ///< none: replace; absent: only into an empty key; version: only over it
  /// The lease the value was made under, if any: a store goes where it was
  /// granted, and ends a lease it replaces.
  Lease* lease = nullptr;
  bool stored = false;
  /// The stored item's version, where the backend returns it (memcached's
  /// meta protocol: `ms ... c`); 0: unknown.
  Cas cas = 0;
};

/// One key of erase: whether an item was there.
struct KeyErase {
  std::string_view key{};
  bool existed = false;
};

/// One lease to end: whether it had been lost (expired, evicted, taken
/// over) before it was ended; nothing is removed then.
struct LeaseEnd {
  std::string_view key{};
  Lease* lease = nullptr;
  bool lost = false;
};

/// A server's clock reading: the server's time is in
/// [time, time + resolution) at some instant during the request.
struct ServerTime {
  TimePoint time;
  Duration resolution{};
};

/// What a memcached transport's gutter and journals did (their options:
/// --GUTTER, --JOURNAL-MAX), since it was made.
struct FleetStats {
  /// Requests sent to the gutter while a key's own server was marked down.
  std::uint64_t gutter_requests = 0;
  /// Keys a server missed while away (a write with no answer, or one sent to
  /// the gutter), kept to be deleted there when it answers.
  std::uint64_t journal_kept = 0;
  /// Of those, deleted on their server.
  std::uint64_t journal_replayed = 0;
  /// Keys not kept (a journal full): their server may serve what their
  /// writes replaced until it expires.
  std::uint64_t journal_dropped = 0;
  /// Keys waiting for their server now: lost if the process ends first.
  std::uint64_t journal_pending = 0;
  /// Reads made by an event loop's own thread on its own connection
  /// (asynchronous calls on MemcachedMetaBackend), not on a pool thread.
  std::uint64_t loop_reads = 0;
};

class Backend {
 public:
  /// Sees one item of a read without a copy: the index of its key, its
  /// bytes (valid only during the call) and flags.
  using Visit =
      detail::FunctionRef<void(std::size_t i, std::string_view data, std::uint32_t flags)>;

  virtual ~Backend() = default;

  // --- The operations. ------------------------------------------------------
  // Each answers in its batch; a failure throws BackendError for the whole
  // batch (some keys may have been done).

  /// Reads every key: its item and version and, where `lease` asks for one
  /// and the backend grants leases in reads, its lease. With `visit`, each
  /// item is handed to it instead of copied into the KeyRead (the hot path).
  virtual void read(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request,
                    const Visit* visit = nullptr) = 0;

  /// For asynchronous calls (dogpile/asio.hpp): starts read() of one key on
  /// `loop`'s own thread without blocking it, and returns true; `done` then
  /// runs once, on the loop, with nullptr (`key` and its lease as read()
  /// leaves them, `visit` called) or what read() would have thrown. False:
  /// not now (the call makes read() where blocking is allowed). `key`,
  /// `lease`, `request` and `visit` live until `done`. The default: false.
  virtual bool start_read(KeyRead& key, const LeaseRequest& lease, const Request& request,
                          const Visit* visit, detail::Loop& loop,
                          std::function<void(std::exception_ptr)> done);

  /// Stores every item, fenced by its fence; sets `stored`.
  virtual void write(std::span<KeyWrite> items, const Request& request) = 0;

  /// Removes every key; sets `existed`.
  virtual void erase(std::span<KeyErase> keys, const Request& request) = 0;

  /// A lock that belongs with the value under `key`: for a clustered backend,
  /// held on the server that stores that value. Not taken yet. Never blocks.
  [[nodiscard]] virtual std::unique_ptr<DistributedLock> make_lock(std::string_view key,
                                                                   Ttl ttl) = 0;

  /// Claims each key's lease: won (its lock set) or held. The default takes
  /// make_lock()->try_lock() per key.
  virtual void claim(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request);

  /// For keys whose lease this caller won: reads the item again (someone may
  /// have stored one before the lease was granted) and sets the fence that a
  /// write under the lease will use. The default reads.
  virtual void confirm(std::span<KeyRead> keys, const Request& request);

  /// For a caller waiting on another's lease: the item, and whether the
  /// lease is still held (with what its lock says). The default reads and,
  /// where there is no item, tries the lease (so it may report won).
  virtual void poll(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request);

  /// Ends each lease (its lock), if it is still held. Never throws for a
  /// lease that was lost; throws BackendError if the backend cannot be asked
  /// (the leases not ended are still held). The default calls lock->release().
  virtual void release(std::span<LeaseEnd> leases, const Request& request);

  /// Marks the item under `key` stale in place, where the store can (meta
  /// protocol: `md k I`): readers are then told so (KeyRead::marked_stale),
  /// and one of them may refresh it; the item then lives `keep_for`. Whether
  /// there was an item; nullopt (the default, with no request): this backend
  /// cannot, and the region rewrites the value instead.
  virtual std::optional<bool> mark_stale(std::string_view key, Ttl keep_for,
                                         const Request& request);

  /// The clock of the server that holds `key`, for reconciling hosts whose
  /// clocks disagree. nullopt (the default): there is no server clock; every
  /// caller's own clock is trusted.
  [[nodiscard]] virtual std::optional<ServerTime> server_time(std::string_view key,
                                                              const Request& request);

  /// What the transport's gutter and journals did; nullopt (the default):
  /// it has neither.
  [[nodiscard]] virtual std::optional<FleetStats> fleet_stats() const;

  // --- Built on the operations, once. ---------------------------------------

  /// The item under `key`, or nullopt.
  [[nodiscard]] std::optional<Item> get(std::string_view key, const Request& request = {});
  /// Calls `visit(data, flags)` with the item under `key` without copying it
  /// where the backend can; whether there was one.
  bool get_view(std::string_view key,
                detail::FunctionRef<void(std::string_view data, std::uint32_t flags)> visit,
                const Request& request = {});
  /// The item under `key` and its version (`cas`, 0 if unknown).
  [[nodiscard]] std::optional<Item> gets(std::string_view key, Cas& cas,
                                         const Request& request = {});
  /// Stores `item` under `key`, replacing any item there.
  void set(std::string_view key, const Item& item, Ttl ttl, const Request& request = {});
  /// Stores `item` only if no item is under `key`; false if one was.
  [[nodiscard]] bool add(std::string_view key, const Item& item, Ttl ttl,
                         const Request& request = {});
  /// Stores `item` only if the item under `key` is still at `version`.
  [[nodiscard]] bool cas(std::string_view key, const Item& item, Ttl ttl, Cas version,
                         const Request& request = {});
  /// Removes the item under `key`; false if there was none.
  bool remove(std::string_view key, const Request& request = {});
  /// The items under `keys`, in the same order (nullopt where missing).
  [[nodiscard]] std::vector<std::optional<Item>> get_multi(std::span<const std::string_view> keys,
                                                           const Request& request = {});
  /// Stores every item (some may have been stored when it throws).
  void set_multi(std::span<const KeyedItem> items, Ttl ttl, const Request& request = {});
  /// Removes every key.
  void remove_multi(std::span<const std::string_view> keys, const Request& request = {});
};

}  // namespace dogpile
