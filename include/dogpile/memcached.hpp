// SPDX-License-Identifier: MIT
// dogpile/memcached.hpp — memcached as a Backend, and a lock held in memcached.
//
// `MemcachedBackend` talks to one or more memcached servers (or any server or
// proxy that speaks memcached's classic text protocol), with a pool of
// connections per server (each operation borrows one). It is configured by a
// libmemcached option string, which libmemcached itself reads:
//
//   auto backend = std::make_shared<dogpile::MemcachedBackend>(
//       "--SERVER=10.0.0.1:11211 --SERVER=10.0.0.2:11211 --POOL-MAX=32");
//
// dogpile puts its own defaults first, so anything in your string overrides
// them: `--SUPPORT-CAS --VERIFY-KEY --TCP-NODELAY --CONNECT-TIMEOUT=1000
// --POLL-TIMEOUT=1000 --RETRY-TIMEOUT=2 --POOL-MIN=1 --POOL-MAX=64`
// (timeouts in milliseconds, retry in seconds). Keys are spread over the
// servers by consistent hashing, ketama-compatible (MD5 points, as libketama
// and pylibmc's "ketama"), unless the string sets --DISTRIBUTION. Rejected,
// because dogpile's locks and results depend on the ASCII protocol's replies:
// `--BINARY-PROTOCOL`, `--USE-UDP`, `--NOREPLY`, `--BUFFER-REQUESTS`, and a
// `--NAMESPACE` (use RegionOptions::key_prefix instead), and replicas. The
// options that shape requests are honoured: servers (--SERVER, --SOCKET,
// weights), --CONNECT-TIMEOUT, --POLL-TIMEOUT (the longest a request waits
// for its next reply), --RETRY-TIMEOUT, --POOL-MAX, --TCP-KEEPALIVE, and the
// distribution and hash (libmemcached computes where keys go when they are
// not the default). Options about libmemcached's own socket handling are
// accepted and have no effect.
//
// The bytes on the wire are read by dogpile's own client, the one the meta
// transport uses: each request ends by the call's deadline (checked after
// every read), a value longer than the server's item size limit closes the
// connection before anything is allocated for it, batches of any size are
// written while their replies are read, and a connection with anything
// unread is closed, never pooled.
//
// `MemcachedLock` is the cross-host lock: `add` of a lock item (a unique
// token, when its holder started, how long the last creation took) with a
// time to live on the server that holds the key's value; released by `cas`
// (expiration -1) so that it is removed only if it is still this holder's.
// It can be the mutex of a Dogpile:
//
//   dogpile::Dogpile<dogpile::MemcachedLock> lock(std::chrono::minutes(5), {},
//                                                 *backend, "report:2026");
//
// libmemcached never appears in this header.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/backend.hpp"

namespace dogpile {

class MemcachedBackend final : public Backend {
 public:
  /// What the option string cannot say (libmemcached 1.1 parses no option for
  /// these), and the option string itself.
  struct Options {
    /// A libmemcached option string: --SERVER=host:port (one per node), and
    /// --CONNECT-TIMEOUT, --POLL-TIMEOUT, --RETRY-TIMEOUT, --POOL-MAX, ...
    std::string config;
    /// Failures in a row (a refused connection, a timeout, a closed or
    /// garbled reply) after which a server is marked down: its keys fail at
    /// once (or, with auto_eject, move) until --RETRY-TIMEOUT seconds have
    /// passed, then one request probes it.
    std::uint32_t failure_limit = 1;
    /// The largest value a server may send (bytes). 0: what the server says
    /// at first contact (`stats settings` item_size_max, at most 1 GiB), or
    /// memcached's default 1 MiB if it does not say. A reply declaring more
    /// closes the connection, and the request fails.
    std::size_t max_item_size = 0;
    /// Auto-eject (REMOVE_FAILED_SERVERS): a dead server leaves the
    /// consistent-hashing ring, so its keys move to the other servers (and
    /// their values are made again there) until it is retried: once
    /// --RETRY-TIMEOUT has passed, a request probes it, and if it answers it
    /// takes its keys back. Default distribution only.
    /// Off (the default): its keys fail fast and their callers fall back to
    /// in-process protection, while keys on the other servers are untouched.
    bool auto_eject = false;
  };

  /// Parses `config` (a libmemcached option string naming at least one
  /// --SERVER) after dogpile's defaults. Connects lazily: a server that is
  /// down now is not an error here. Throws std::invalid_argument with
  /// libmemcached's parse error, or naming the rejected option.
  explicit MemcachedBackend(std::string_view config);
  /// The same, with the options the string cannot carry.
  explicit MemcachedBackend(Options options);
  ~MemcachedBackend() override;
  MemcachedBackend(const MemcachedBackend&) = delete;
  MemcachedBackend& operator=(const MemcachedBackend&) = delete;

  // Backend. Each request borrows a pooled connection (or opens one) and
  // ends by its deadline (Request), or when a reply takes longer than the
  // poll timeout. Failures throw BackendError naming the operation, key,
  // server and cause; so does a key that is not a memcached key (code
  // INVALID_KEY, nothing sent: CacheRegion maps user keys to valid ones).
  // At the floor of the classic protocol, one request per server for any
  // number of keys, written while replies are read:
  //   read:    gets k...  (one key: the hot path, its item visited in the
  //            connection's buffer)
  //   write:   set, add or cas per key; erase: delete per key
  //   claim:   add k#L per key on the value's server (the lock item carries
  //            its LockInfo)
  //   confirm, poll: gets k k#L ...
  //   release: cas k#L (expiration -1) against the version confirm saw, after
  //            one gets pipeline for the locks whose version it did not see.
  void read(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request,
            const Visit* visit = nullptr) override;
  void write(std::span<KeyWrite> items, const Request& request) override;
  void erase(std::span<KeyErase> keys, const Request& request) override;
  [[nodiscard]] std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override;
  void claim(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override;
  void confirm(std::span<KeyRead> keys, const Request& request) override;
  void poll(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override;
  void release(std::span<LeaseEnd> leases, const Request& request) override;
  /// The `time` of the `stats` of the server that holds `key` (resolution:
  /// one second).
  [[nodiscard]] std::optional<ServerTime> server_time(std::string_view key,
                                                      const Request& request) override;
  /// nullopt (the region rewrites the value marked) but while the key's
  /// server is away and the gutter takes its keys: then the key is removed.
  std::optional<bool> mark_stale(std::string_view key, Ttl keep_for,
                                 const Request& request) override;
  /// The gutter's and the journals' counts (--GUTTER, --JOURNAL-MAX).
  [[nodiscard]] std::optional<FleetStats> fleet_stats() const override;

  /// The option string in effect: dogpile's defaults, then the caller's.
  [[nodiscard]] const std::string& options() const noexcept;

  struct Impl;  // shared with the locks this backend made

 private:
  friend class MemcachedLock;
  std::shared_ptr<Impl> impl_;
};

class MemcachedLock final : public DistributedLock {
 public:
  /// The lock for user key `key` (any bytes; mapped to a valid memcached key
  /// the way a CacheRegion with an empty prefix maps it), on the server that
  /// holds that key's value. Not taken yet. Never blocks, never throws but
  /// std::bad_alloc. Holds a reference to the backend's connection pool.
  MemcachedLock(MemcachedBackend& backend, std::string_view key,
                Ttl ttl = std::chrono::seconds(30));
  /// Releases the lock if it is still held (errors are swallowed: the lock
  /// then expires on its own).
  ~MemcachedLock() override;
  MemcachedLock(const MemcachedLock&) = delete;
  MemcachedLock& operator=(const MemcachedLock&) = delete;

  /// `gets`, then `touch` (which keeps the item's version) if the token is
  /// still ours.
  bool extend(const Request& request = {}) override;
  [[nodiscard]] Ttl ttl() const noexcept override { return ttl_; }

  /// The memcached key of the lock item.
  [[nodiscard]] const std::string& lock_key() const noexcept { return lock_key_; }

 protected:
  /// One `add` of a new token.
  bool try_acquire(const Request& request) override;
  /// `cas` with expiration -1 against the lock's version (learned when the
  /// region confirmed its lease; otherwise by a `gets` first) if the token is
  /// still ours.
  bool release_acquired(const Request& request) override;

 private:
  friend class MemcachedBackend;
  friend struct MemcachedBackend::Impl;
  struct Mapped {};  // `value_key` is already a memcached key
  MemcachedLock(Mapped, std::shared_ptr<MemcachedBackend::Impl> impl, std::string value_key,
                Ttl ttl, LockInfo info);
  void prepare();  // a new token, and the item that carries it

  std::shared_ptr<MemcachedBackend::Impl> impl_;
  std::string value_key_;  // places the lock on the value's server
  std::string lock_key_;
  Ttl ttl_;
  LockInfo info_;
  std::array<std::uint8_t, 16> token_{};
  std::string bytes_;     // the lock item, as stored
  Cas lock_version_ = 0;  // 0: unknown
  bool held_ = false;
  bool granted_ = false;  // taken by a claim's add: try_acquire has nothing to ask
  // The server it was taken on (its key's, or the gutter's while that one
  // was down): its reads, release and extensions go there. npos: not taken.
  static constexpr std::size_t kNoServer = static_cast<std::size_t>(-1);
  std::size_t server_ = kNoServer;
  std::optional<bool> settled_;  // released by a batch: release_acquired's answer
};

}  // namespace dogpile
