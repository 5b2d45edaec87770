// memcached's expiration times (internal): the one rule both transports send.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>

#include "dogpile/backend.hpp"

namespace dogpile::detail {

/// memcached reads an expiration above 30 days as an absolute Unix time.
inline constexpr Ttl kMaxRelativeExpiration = std::chrono::hours(24 * 30);

/// The exptime memcached is sent for a time to live (0: never expires).
[[nodiscard]] inline std::int64_t exptime(Ttl ttl) noexcept {
  if (ttl <= Ttl::zero()) return 0;
  if (ttl > kMaxRelativeExpiration) return std::time(nullptr) + ttl.count();
  return ttl.count();
}

}  // namespace dogpile::detail
