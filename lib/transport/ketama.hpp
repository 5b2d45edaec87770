// SPDX-License-Identifier: MIT
// Ketama consistent hashing, placed exactly as libmemcached 1.1 places keys
// with MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED (internal), so that MemcachedBackend
// and MemcachedMetaBackend agree on every key's server and a fleet can move
// from one to the other.
//
// Each server gets about 160 points on a 32-bit circle, in proportion to its
// weight: four points per MD5 digest of "host-N" (or "host:port-N" when the
// port is not 11211), each a little-endian word. A key's hash is the first
// little-endian word of its MD5; its server owns the first point at or after
// it (wrapping around). Point counts are computed in single-precision float,
// as libmemcached does (with weights 1,2,3,4,15 it gives 28/60/92/124/480
// points, not 32/64/96/128/480).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dogpile::detail {

struct RingServer {
  std::string host;
  std::uint16_t port = 11211;
  std::uint32_t weight = 1;
};

class KetamaRing {
 public:
  KetamaRing() = default;
  /// The ring of `servers` (in their given order: the index a key maps to)
  /// of which `live[i]` take part (all, if `live` is empty). With none live,
  /// the ring is empty.
  KetamaRing(std::span<const RingServer> servers, std::span<const bool> live = {});

  /// The index of the server that holds `key`. The ring must not be empty.
  [[nodiscard]] std::size_t server_for(std::string_view key) const noexcept;
  [[nodiscard]] bool empty() const noexcept { return points_.empty(); }
  [[nodiscard]] std::size_t points() const noexcept { return points_.size(); }

  /// A key's position on the circle.
  [[nodiscard]] static std::uint32_t key_hash(std::string_view key) noexcept;

 private:
  std::vector<std::pair<std::uint32_t, std::uint32_t>> points_;  // (value, server index), sorted
};

}  // namespace dogpile::detail
