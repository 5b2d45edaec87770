// SPDX-License-Identifier: MIT
#include "transport/ketama.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "transport/md5.hpp"

// The point counts must be computed as libmemcached computes them: each
// operation rounded to float, nothing fused (CMake builds this file with
// -ffp-contract=off).

namespace dogpile::detail {
namespace {

std::uint32_t word(const Md5Digest& d, std::size_t n) noexcept {
  return std::uint32_t{d[4 * n]} | (std::uint32_t{d[4 * n + 1]} << 8) |
         (std::uint32_t{d[4 * n + 2]} << 16) | (std::uint32_t{d[4 * n + 3]} << 24);
}

constexpr float kPointsPerServer = 160.0f;
constexpr std::uint16_t kDefaultPort = 11211;

}  // namespace

std::uint32_t KetamaRing::key_hash(std::string_view key) noexcept { return word(md5(key), 0); }

KetamaRing::KetamaRing(std::span<const RingServer> servers, std::span<const bool> live) {
  auto is_live = [&](std::size_t i) { return live.empty() || live[i]; };
  std::uint64_t total_weight = 0;
  std::uint32_t live_count = 0;
  for (std::size_t i = 0; i < servers.size(); ++i) {
    if (!is_live(i)) continue;
    total_weight += servers[i].weight;
    ++live_count;
  }
  if (live_count == 0) return;
  for (std::size_t i = 0; i < servers.size(); ++i) {
    if (!is_live(i)) continue;
    const RingServer& s = servers[i];
    volatile float share = static_cast<float>(s.weight) / static_cast<float>(total_weight);
    volatile float t = share * kPointsPerServer;
    t = t / 4.0f;
    t = t * static_cast<float>(live_count);
    t = t + 0.0000000001f;
    const auto digests = static_cast<std::uint32_t>(std::floor(t));
    for (std::uint32_t n = 0; n < digests; ++n) {
      const std::string name = s.port == kDefaultPort ? fmt::format("{}-{}", s.host, n)
                                                      : fmt::format("{}:{}-{}", s.host, s.port, n);
      const Md5Digest d = md5(name);
      for (std::size_t a = 0; a < 4; ++a) {
        points_.emplace_back(word(d, a), static_cast<std::uint32_t>(i));
      }
    }
  }
  std::sort(points_.begin(), points_.end());  // by value, then by index: ties go to the lower
}

std::size_t KetamaRing::server_for(std::string_view key) const noexcept {
  const std::uint32_t hash = key_hash(key);
  auto it =
      std::lower_bound(points_.begin(), points_.end(), std::make_pair(hash, std::uint32_t{0}));
  if (it == points_.end()) it = points_.begin();
  return it->second;
}

}  // namespace dogpile::detail
