// SPDX-License-Identifier: MIT
// The region's counters (internal): one sharded counter each (every call
// adds to some, from any thread), read as RegionStats.
#pragma once

#include <atomic>
#include <cstdint>

#include "base/sharded_counter.hpp"
#include "dogpile/stats.hpp"

namespace dogpile::detail {

struct Counters {
  using Counter = ShardedCounter;
  Counter hits, misses, stale_served, waited, created, creation_errors, lock_waits, degraded,
      backend_errors, decode_errors, lock_errors, early_recomputes, background_refreshes,
      invalidation_checks, fenced_out, locks_lost, hung_creations, wait_timeouts, removals,
      kept_served, local_hits, compressed, revalidated;

  static void add(Counter& c, std::uint64_t n = 1) noexcept { c.add(n); }

  [[nodiscard]] RegionStats snapshot() const noexcept {
    auto load = [](const Counter& c) { return c.load(); };
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
