// SPDX-License-Identifier: MIT
// dogpile/stats.hpp — a region's counts (CacheRegion::stats()).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dogpile {

/// Counts since the region was made, per key: every key of a get_or_create
/// call that returns counts in exactly one of hits, local_hits, stale_served,
/// waited or created, so a get_or_create_multi of five keys adds five (its
/// call counts once in RegionMetrics::calls, by its costliest key). A creator
/// that throws counts in creation_errors (and its caller, if it was served
/// the stale value instead, in stale_served). prometheus_text() names these
/// dogpile_key_*_total.
struct RegionStats {
  std::uint64_t hits = 0;              ///< fresh value found in the backend
  std::uint64_t misses = 0;            ///< first read found no usable value
  std::uint64_t stale_served = 0;      ///< returned an expired value while another regenerated
  std::uint64_t waited = 0;            ///< waited for another caller's value
  std::uint64_t created = 0;           ///< ran the creator
  std::uint64_t creation_errors = 0;   ///< the creator threw
  std::uint64_t lock_waits = 0;        ///< waited on another caller (in this process or not)
  std::uint64_t degraded = 0;          ///< creations without the distributed lock (backend failing)
  std::uint64_t backend_errors = 0;    ///< backend operations that failed
  std::uint64_t decode_errors = 0;     ///< stored items that did not decode
  std::uint64_t lock_errors = 0;       ///< locks lost, or creators declared hung
  std::uint64_t early_recomputes = 0;  ///< fresh values this process chose to recompute early
  std::uint64_t background_refreshes = 0;  ///< regenerations handed to the executor
  std::uint64_t invalidation_checks = 0;   ///< reads of the invalidation record
  std::uint64_t fenced_out = 0;            ///< creations not stored: the key was written meanwhile
  std::uint64_t locks_lost = 0;  ///< locks found gone (evicted, flushed, expired) before release
  std::uint64_t hung_creations = 0;  ///< creators that ran past max_creation
  std::uint64_t wait_timeouts = 0;   ///< waits ended by a deadline, stop or max_wait
  std::uint64_t removals = 0;        ///< tombstones written by remove() and invalidate(args)
  std::uint64_t kept_served = 0;     ///< served from the values kept in process (backend failing)
  std::uint64_t local_hits = 0;      ///< served from the local tier, with no request
  std::uint64_t revalidated = 0;     ///< local-tier items kept once the backend said unchanged
  std::size_t local_entries = 0;     ///< items in the local tier now
  std::size_t local_bytes = 0;       ///< their cost against LocalTier::max_bytes
  std::uint64_t compressed = 0;      ///< values compressed to be stored (Compression)
};

}  // namespace dogpile
