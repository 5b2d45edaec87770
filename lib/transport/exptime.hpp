// SPDX-License-Identifier: MIT
// memcached's expiration times (internal): the one rule both transports send.
//
// memcached reads an exptime of up to 30 days as seconds from now, and a
// larger one as an absolute Unix time on its own clock, which it parses as a
// signed 32-bit number: nothing after 2038-01-19 03:14:07 UTC can be said
// (a larger number wraps: 2^32 + 10 reads as 10 s). So a time to live
//   - of 0 (none) is sent as 0: never expires;
//   - up to 30 days is sent as it is;
//   - longer is sent as the server's time now plus it;
//   - past what memcached can say is sent as 0: the item stays until it is
//     evicted or replaced, and its envelope still judges its age.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

#include "dogpile/backend.hpp"

namespace dogpile::detail {

/// memcached reads an expiration above 30 days as an absolute Unix time.
inline constexpr Ttl kMaxRelativeExpiration = std::chrono::hours(24 * 30);
/// The last absolute time memcached reads as one.
inline constexpr std::int64_t kMaxAbsoluteExpiration = 2147483647;

/// Whether `ttl` is sent as an absolute time (and needs the server's clock).
[[nodiscard]] constexpr bool absolute_expiration(Ttl ttl) noexcept {
  return ttl > kMaxRelativeExpiration;
}

/// The exptime memcached is sent for `ttl`, `server_now` being the server's
/// Unix time now (read only for an absolute expiration).
[[nodiscard]] constexpr std::int64_t exptime(Ttl ttl, std::int64_t server_now) noexcept {
  if (ttl <= Ttl::zero()) return 0;
  if (!absolute_expiration(ttl)) return ttl.count();
  if (server_now <= 0 || ttl.count() > kMaxAbsoluteExpiration - server_now) return 0;
  return server_now + ttl.count();
}

/// For the short times to live of locks and leases: an absolute one (a
/// lock_timeout over 30 days) is judged by this host's clock.
[[nodiscard]] inline std::int64_t lock_exptime(Ttl ttl) noexcept {
  return exptime(ttl, absolute_expiration(ttl) ? std::time(nullptr) : 0);
}

}  // namespace dogpile::detail
