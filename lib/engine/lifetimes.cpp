// SPDX-License-Identifier: MIT
#include "engine/lifetimes.hpp"

#include <algorithm>

namespace dogpile::detail {

namespace {
constexpr Ttl kMemcachedLongest = std::chrono::hours(24 * 30);
}  // namespace

Lifetimes::Lifetimes(const RegionOptions& options) noexcept
    : stale_grace_(options.stale_grace),
      lease_(options.lock_timeout),
      refresh_below_(std::chrono::ceil<Ttl>(options.stale_grace)),
      tombstone_(
          std::min<Ttl>(std::chrono::ceil<Ttl>(options.lock_timeout +
                                               options.max_creation.value_or(kNoMaxCreation)),
                        kMemcachedLongest)),
      marked_stale_(std::max(std::chrono::ceil<Ttl>(options.stale_grace),
                             std::chrono::ceil<Ttl>(options.lock_timeout))) {}

Ttl Lifetimes::item(const Expiration& expiration) const noexcept {
  if (!expiration) return Ttl::zero();
  return std::max(Ttl(1), std::chrono::ceil<Ttl>(*expiration + stale_grace_));
}

Duration Lifetimes::kept(const Expiration& expiration) const noexcept {
  return expiration ? *expiration + stale_grace_ : kNoExpirationKept;
}

Duration Lifetimes::held_elsewhere(std::chrono::microseconds took) const noexcept {
  return std::clamp<Duration>(took, kMinHeld, lease_);
}

}  // namespace dogpile::detail
