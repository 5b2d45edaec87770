// SPDX-License-Identifier: MIT
// The region's counters (internal): one atomic each, read as RegionStats.
#pragma once

#include <atomic>
#include <cstdint>

#include "dogpile/stats.hpp"

namespace dogpile::detail {

struct Counters {
  using Counter = std::atomic<std::uint64_t>;
  Counter hits{0}, misses{0}, stale_served{0}, waited{0}, created{0}, creation_errors{0},
      lock_waits{0}, degraded{0}, backend_errors{0}, decode_errors{0}, lock_errors{0},
      early_recomputes{0}, background_refreshes{0}, invalidation_checks{0}, fenced_out{0},
      locks_lost{0}, hung_creations{0}, wait_timeouts{0}, removals{0}, kept_served{0},
      local_hits{0}, compressed{0}, revalidated{0};

  static void add(Counter& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  [[nodiscard]] RegionStats snapshot() const noexcept {
    auto load = [](const Counter& c) { return c.load(std::memory_order_relaxed); };
    RegionStats s;
    s.hits = load(hits);
    s.misses = load(misses);
    s.stale_served = load(stale_served);
    s.waited = load(waited);
    s.created = load(created);
    s.creation_errors = load(creation_errors);
    s.lock_waits = load(lock_waits);
    s.degraded = load(degraded);
    s.backend_errors = load(backend_errors);
    s.decode_errors = load(decode_errors);
    s.lock_errors = load(lock_errors);
    s.early_recomputes = load(early_recomputes);
    s.background_refreshes = load(background_refreshes);
    s.invalidation_checks = load(invalidation_checks);
    s.fenced_out = load(fenced_out);
    s.locks_lost = load(locks_lost);
    s.hung_creations = load(hung_creations);
    s.wait_timeouts = load(wait_timeouts);
    s.removals = load(removals);
    s.kept_served = load(kept_served);
    s.local_hits = load(local_hits);
    s.revalidated = load(revalidated);
    s.compressed = load(compressed);
    return s;
  }
};

}  // namespace dogpile::detail
