// SPDX-License-Identifier: MIT
// How long what a region writes lives (internal): every time to live the
// engine gives a backend, and every bound derived from the same options, in
// one place.
#pragma once

#include <chrono>

#include "dogpile/backend.hpp"
#include "dogpile/options.hpp"

namespace dogpile::detail {

class Lifetimes {
 public:
  explicit Lifetimes(const RegionOptions& options) noexcept;

  /// An item judged by `expiration`: it lives expiration + stale_grace (at
  /// least a second: memcached's unit); forever without an expiration.
  [[nodiscard]] Ttl item(const Expiration& expiration) const noexcept;
  /// A lease (lock): lock_timeout, extended while its creator runs.
  [[nodiscard]] Ttl lease() const noexcept { return lease_; }
  /// A read grants the right to refresh an item whose remaining time to
  /// live fell below this (the meta protocol's R): its stale grace.
  [[nodiscard]] Ttl refresh_below() const noexcept { return refresh_below_; }
  /// A tombstone outlives any creation that began before it: a lock lives
  /// lock_timeout past its last extension, and extensions stop at
  /// max_creation (without one, a day); at most memcached's 30 days.
  [[nodiscard]] Ttl tombstone() const noexcept { return tombstone_; }
  /// An item marked stale in place lives on as a stale value does, and at
  /// least as long as a lease (a refresher that died holds it no longer).
  [[nodiscard]] Ttl marked_stale() const noexcept { return marked_stale_; }
  /// A copy degraded mode keeps, for a value judged by `expiration`: as long
  /// as the backend would have kept it; without an expiration, a day (it is
  /// a stand-in while a server is away, not a second cache).
  [[nodiscard]] Duration kept(const Expiration& expiration) const noexcept;
  /// How long a process remembers that another holds a key's lease: about
  /// as long as the key's last creation took (`took`), within
  /// [100 ms, lock_timeout].
  [[nodiscard]] Duration held_elsewhere(std::chrono::microseconds took) const noexcept;
  /// A release that failed is tried again until the lock would have
  /// expired anyway.
  [[nodiscard]] Duration release_retries() const noexcept { return lease_; }

  static constexpr Duration kNoExpirationKept = std::chrono::hours(24);
  static constexpr Duration kNoMaxCreation = std::chrono::hours(24);
  static constexpr Duration kMinHeld = std::chrono::milliseconds(100);

 private:
  Duration stale_grace_;
  Ttl lease_;
  Ttl refresh_below_;
  Ttl tombstone_;
  Ttl marked_stale_;
};

}  // namespace dogpile::detail
