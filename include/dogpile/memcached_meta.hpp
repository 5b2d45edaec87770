// SPDX-License-Identifier: MIT
// dogpile/memcached_meta.hpp — memcached over its meta protocol, with the
// server's own leases.
//
// `MemcachedMetaBackend` speaks memcached 1.6's meta commands (mg, ms, md,
// mn) over its own connections. The lease is granted in the read itself: a
// miss creates a placeholder and hands the right to create to exactly one
// caller (`W`), the others are told it is held (`Z`); a value whose remaining
// time to live fell below the stale grace hands one caller the right to
// refresh it while the others keep reading it. The store is fenced by the
// CAS the lease came with. So every access that does not create is one round
// trip, and a creation is two (the read that won, the store).
//
// It takes the same option string as MemcachedBackend and places keys on the
// same servers (libmemcached's ketama, weights included), so switching is one
// word in a service's code, and both can serve one fleet during a move:
//
//   auto backend = std::make_shared<dogpile::MemcachedMetaBackend>(
//       "--SERVER=10.0.0.1:11211 --SERVER=10.0.0.2:11211 --POOL-MAX=32");
//
// Options: --SERVER=host[:port][/?weight] (or host:port:weight),
// --CONNECT-TIMEOUT=ms, --POLL-TIMEOUT=ms (each request as a whole, or the
// calling region's deadline if it is sooner), --RETRY-TIMEOUT=s (a failed
// server is skipped that long, then one caller probes it), --POOL-MAX=n
// (idle connections kept per server), --POOL-MIN, --TCP-KEEPALIVE, and
// --TCP-NODELAY --SUPPORT-CAS --VERIFY-KEY --DISTRIBUTION=consistent (what it
// always does). Any other option is refused with a message naming it.
//
// A server that does not speak the meta protocol (memcached before 1.6) is
// refused at first contact: each request to it throws BackendError naming
// the server and suggesting MemcachedBackend.
//
// make_lock() gives a lock item (`k#L`, as MemcachedLock) taken by an add.
// No transport internals appear in this header.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "dogpile/backend.hpp"

namespace dogpile {

class MemcachedMetaBackend final : public Backend {
 public:
  struct Options {
    /// The option string (above).
    std::string config;
    /// A server marked down leaves the ring until it is retried, so its keys
    /// move to the others (and are made again there). Off (the default): its
    /// keys fail fast and their callers fall back to in-process protection.
    bool auto_eject = false;
    /// The largest value a server may send (bytes). 0: what the server says
    /// at first contact (`stats settings` item_size_max, at most 1 GiB), or
    /// memcached's default 1 MiB if it does not say. A reply declaring more
    /// closes the connection, and the request fails.
    std::size_t max_item_size = 0;
  };

  /// Parses `config`. Connects lazily: a server down now is not an error
  /// here. Throws std::invalid_argument naming a refused option.
  explicit MemcachedMetaBackend(std::string_view config);
  explicit MemcachedMetaBackend(Options options);
  ~MemcachedMetaBackend() override;
  MemcachedMetaBackend(const MemcachedMetaBackend&) = delete;
  MemcachedMetaBackend& operator=(const MemcachedMetaBackend&) = delete;

  // The operations on meta commands, each one request per key, or one
  // pipeline per server for many (`mg ... q O<i>` ... `mn`). Failures throw
  // BackendError naming the operation, key, server and cause.
  //   read:    mg k N<lock ttl> R<stale grace> v f c t   (W: won, Z: held, X: marked stale)
  //   write:   ms k T F, and C<cas> (a version: the lease's) or ME (an empty key)
  //   erase:   md k
  //   claim:   mg k N<ttl> R2592000 v f c t  (the lease of a value the region judged
  //            stale); for an item without expiry, the lock item: ms k#L ME
  //   confirm: mg k v f c t
  //   poll:    mg k N<ttl> v f c t          (one request a poll)
  //   release: nothing after a store; else the lease is given back: md k C<cas>
  //            (a placeholder), ms k 0 MA C<cas> (a value being refreshed),
  //            md k I C<cas> (a value marked stale)
  // A lease is extended (slow creator) by touching its item (mg k T), which
  // keeps its CAS, so the fence stays valid.
  void read(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request,
            const Visit* visit = nullptr) override;
  /// The read of one key on an event loop's own connection to its server
  /// (taken from the idle pool; one per loop and server; every read made in
  /// one turn of the loop written at once, replies matched by opaque). Not
  /// for a server marked down, in the gutter's place, or with writes to
  /// replay: those read through read(), as does the first read on a server
  /// (it opens the connection the loop then takes).
  bool start_read(KeyRead& key, const LeaseRequest& lease, const Request& request,
                  const Visit* visit, detail::Loop& loop,
                  std::function<void(std::exception_ptr)> done) override;
  void write(std::span<KeyWrite> items, const Request& request) override;
  void erase(std::span<KeyErase> keys, const Request& request) override;
  [[nodiscard]] std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override;
  void claim(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override;
  void confirm(std::span<KeyRead> keys, const Request& request) override;
  void poll(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override;
  /// One `md k I T<keep_for>`: readers get the value, marked stale, and one
  /// of them the right to refresh it.
  std::optional<bool> mark_stale(std::string_view key, Ttl keep_for,
                                 const Request& request) override;
  /// `stats` `time` of the key's server (resolution: one second).
  [[nodiscard]] std::optional<ServerTime> server_time(std::string_view key,
                                                      const Request& request) override;
  /// The gutter's and the journals' counts (--GUTTER, --JOURNAL-MAX).
  [[nodiscard]] std::optional<FleetStats> fleet_stats() const override;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace dogpile
