// SPDX-License-Identifier: MIT
// dogpile/options.hpp — how a CacheRegion, and one call to it, behave.
//
// Types: WaitPolicy, LocalTier, Compression, RegionOptions, Invalidation,
// Deadline, CallOptions.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "dogpile/clock.hpp"
#include "dogpile/errors.hpp"
#include "dogpile/outcome.hpp"

namespace dogpile {

class Executor;  // dogpile/executor.hpp
class Observer;  // dogpile/metrics.hpp

/// How a caller that finds no value waits while another process creates it.
/// It polls one request at a time (the value and the lock together).
struct WaitPolicy {
  /// Shortest pause between polls (the floor under the jitter).
  Duration first_poll = std::chrono::milliseconds(1);
  /// The pause around the moment the value is due. When the lock says when
  /// its holder started and how long the previous creation took, the waiter
  /// sleeps until then and polls every max_poll from there: a value is seen
  /// within about max_poll of being stored. It is also the shortest pause
  /// with no history.
  Duration max_poll = std::chrono::milliseconds(5);
  /// With no history, the pause is this fraction of the time waited so far;
  /// past `growth_knee` the fraction grows in proportion to the time waited
  /// (twice as large at twice the knee). Between max_poll and max_interval:
  /// a 200 ms creation is seen within about 12 ms of its store, a 5 s one
  /// costs about 52 polls.
  double growth = 0.06;
  Duration growth_knee = std::chrono::milliseconds(200);
  Duration max_interval = std::chrono::seconds(1);
  /// When the previous creation's length is known but not when this one
  /// started (memcached's meta leases say neither), the waiter polls this
  /// many times over that length, then backs off with the overrun (a third
  /// of it, as past the due time of a creation whose start is known).
  int polls_per_creation = 16;
  /// Stop waiting after this long: the caller gets WaitTimeout (with no
  /// stale value at hand), or runs the creator itself if
  /// create_after_max_wait. nullopt: wait while the holder lives (its lock is
  /// extended up to RegionOptions::max_creation).
  std::optional<Duration> max_wait = std::nullopt;
  /// After max_wait, run the creator here (a second creator) rather than give up.
  bool create_after_max_wait = false;
};

/// The local tier (RegionOptions::local): a bounded in-process cache in front
/// of the backend. A value read from the backend (or made, or set, here) is
/// kept for `ttl`; while kept and fresh by its envelope it is served with no
/// request. This process's set, remove and invalidations apply to it at once;
/// another process's write is seen here within `ttl` (the bound on how stale
/// a local hit may be), its region-wide invalidation within invalidation_check.
/// A local miss goes through the usual path, herd protection included.
///
/// Revalidation: once an item's `ttl` has passed, the backend is asked
/// whether it changed — its version alone (memcached's meta protocol: `mg k
/// c`, a header-sized reply; the classic transport reads the item whole) —
/// and the item is kept for another `ttl` if it did not. A short `ttl` then
/// costs a small request per key and `ttl`, not a read and decode.
struct LocalTier {
  /// How long a value is served from this process without asking the
  /// backend: the staleness bound for other processes' writes.
  Duration ttl = std::chrono::seconds(1);
  /// Bounds: items, and bytes (keys, values and bookkeeping); the least
  /// recently used items go first.
  std::size_t max_entries = 100'000;
  std::size_t max_bytes = std::size_t{64} << 20;
  /// Ask whether an item changed before reading it again (above).
  bool revalidate = true;
  /// Frequency-aware admission (TinyLFU): once the tier is full, a value
  /// read from the backend is kept only if its key was asked for more often
  /// lately than the least recently used one it would evict, so a scan of
  /// keys asked for once does not flush the hot ones. false: every value
  /// read is kept (least recently used).
  bool admission = true;
};

/// Compression of stored values (RegionOptions::compression). A value whose
/// encoded bytes reach `threshold` is stored as a zstd frame, marked so in
/// its envelope, when that is smaller. Every region (of this version or
/// later) reads compressed values, whatever its own setting, so hosts may
/// turn it on one at a time once all run it.
struct Compression {
  /// Compress values of at least this many encoded bytes; 0: never.
  /// memcached refuses items above its item size limit (1 MiB unless -I):
  /// a value that compresses below it can be cached at all.
  std::size_t threshold = 0;
  /// zstd level, 1 (fastest) to 19 (smallest).
  int level = 3;
  /// A compressed value whose frame declares more bytes than this is a miss
  /// (a decode error), not an allocation: the most memory one corrupt or
  /// hostile item can take.
  std::size_t max_size = std::size_t{64} << 20;
};

struct RegionOptions {
  /// How long a value is fresh; no_expiration: forever.
  Expiration expiration = no_expiration;
  /// How long after expiry a value may still be served while one caller
  /// regenerates it. The backend's time to live for an item is
  /// expiration + stale_grace (rounded up to whole seconds).
  Duration stale_grace = std::chrono::seconds(60);
  /// Time to live of the distributed lock: if its holder dies, others wait at
  /// most this long. A live holder's lock is extended (every
  /// (lock_timeout - 1 s) / 3) while its creator runs. At least 2 s.
  std::chrono::seconds lock_timeout = std::chrono::seconds(30);
  /// A creator that runs longer is declared hung: its lock is no longer
  /// extended (another process takes over once it expires), this process's
  /// callers waiting on it start over, and its late store is fenced out.
  /// Reported as ErrorKind::lock. nullopt: never.
  std::optional<Duration> max_creation = std::chrono::minutes(5);
  /// Put before every key; printable ASCII without '#', at most 100 bytes.
  std::string key_prefix;
  WaitPolicy wait;
  /// The longest a call may take before it gives up waiting (with the stale
  /// value, or WaitTimeout), unless CallOptions::deadline says otherwise.
  /// Bounds backend requests too. nullopt: none.
  std::optional<Duration> deadline = std::nullopt;
  /// Source of "now" and of timers; nullptr: dogpile::system_clock(). Must
  /// outlive the region.
  const Clock* clock = nullptr;
  /// How often this host's clock is measured against the fleet's (the clock
  /// of the server that holds the region's invalidation record), so that
  /// hosts whose clocks disagree judge ages alike. The first call measures
  /// it (one request: to within half a second); a background thread refines
  /// it over the next second (to about a tenth) and renews it at about this
  /// interval. nullopt: trust the local clock. Backends without a server
  /// clock (server_time() is nullopt) are not measured.
  std::optional<Duration> clock_sync = std::chrono::seconds(10);
  /// Receives errors; empty: at most one line per second to stderr.
  ErrorHandler on_error;

  /// The caller that wins the lock of a stale key returns the stale value at
  /// once; the new value is made on `executor` (the lock is held, and kept
  /// alive, until it is stored). Applies to cached() wrappers, and to calls
  /// that pass CallOptions::background (their creator is copied and may run
  /// after the call returns).
  bool background_refresh = false;
  /// Where background regenerations run; nullptr: a ThreadPoolExecutor with
  /// 2 threads and a queue of 64, made when background_refresh is on. A
  /// regeneration it refuses runs in the calling thread instead.
  std::shared_ptr<Executor> executor;
  /// If a creator throws while a stale value exists, its caller and the
  /// callers waiting on it get the stale value; the error goes to the handler
  /// (ErrorKind::creator) and creation_errors; the next call tries again.
  bool serve_stale_on_error = false;
  /// XFetch: a fresh value is recomputed early, with probability rising as
  /// its expiry nears: when now + delta * beta * -ln(U) >= expiry, where delta
  /// is how long its creator took and U is uniform in (0, 1]. nullopt: off;
  /// 1.0 is the usual beta (larger: earlier). One caller recomputes (the
  /// others keep the fresh value); with background_refresh it, too, returns
  /// at once.
  std::optional<double> early_recompute_beta = std::nullopt;
  /// Seeds the random draws of early recomputation; 0: from the kernel.
  std::uint64_t random_seed = 0;
  /// How often a process reads the region's invalidation record (see
  /// invalidate()): the bound on how long another process's invalidation
  /// takes to be seen here. One backend `get` per interval per process, on
  /// the first call after it passes. nullopt: never (only this process's own
  /// invalidations apply).
  std::optional<Duration> invalidation_check = std::chrono::seconds(1);
  /// Degraded mode: while the backend fails for a key, the values this
  /// process makes for it are kept in process (for expiration + stale_grace,
  /// judged like stored ones), so that a dead server costs at most one
  /// creation per key per expiration in each process, not one per call. The
  /// bounds of that store (least recently used items go first); 0 entries:
  /// keep nothing.
  std::size_t degraded_entries = 10'000;
  std::size_t degraded_bytes = std::size_t{64} << 20;
  /// A local tier in front of the backend for hot keys (see LocalTier);
  /// nullopt: every read asks the backend.
  std::optional<LocalTier> local = std::nullopt;
  /// Compression of large values (see Compression); off by default.
  Compression compression;
  /// Sees every call, creation and backend request as it ends (see
  /// Observer); nullptr: none. The region's own measurements
  /// (CacheRegion::metrics) are kept either way.
  std::shared_ptr<Observer> observer;
};

/// What CacheRegion::invalidate does to the values stored before it.
enum class Invalidation {
  hard,  ///< they are misses: the next caller regenerates, the others wait
  soft,  ///< they are stale: served while one caller regenerates
};

/// When a call must be done: a duration from the call's start, a time point
/// on the region's clock, or a std::chrono::steady_clock time point (a
/// service's request deadline).
class Deadline {
 public:
  Deadline(Duration within) noexcept : within_(within) {}  // NOLINT: implicit on purpose
  template <class Rep, class Period>
  Deadline(std::chrono::duration<Rep, Period> within) noexcept  // NOLINT
      : within_(std::chrono::duration_cast<Duration>(within)) {}
  Deadline(TimePoint at) noexcept : at_(at) {}                                  // NOLINT
  Deadline(std::chrono::steady_clock::time_point at) noexcept : steady_(at) {}  // NOLINT

  /// The deadline on `clock`'s timer, for a call starting now.
  [[nodiscard]] SteadyTime on(const Clock& clock) const noexcept;

 private:
  std::optional<Duration> within_;
  std::optional<TimePoint> at_;
  std::optional<std::chrono::steady_clock::time_point> steady_;
};

/// Options of one get_or_create (or get_or_create_multi) call.
struct CallOptions {
  /// This call's expiration instead of the region's: it judges freshness, and
  /// the stored item lives expiration + stale_grace.
  std::optional<Expiration> expiration = std::nullopt;
  /// Regenerate a stale value in the background (RegionOptions::
  /// background_refresh must be on). The creator is copied and may run after
  /// the call returns, so it must own what it uses (capture by value).
  bool background = false;
  /// Receives how the call was served (single-key calls).
  Outcome* outcome = nullptr;
  /// When this call must be done (else RegionOptions::deadline): waits end
  /// then with the stale value or WaitTimeout, and backend requests are cut
  /// short. A creator this caller runs is never interrupted.
  std::optional<Deadline> deadline = std::nullopt;
  /// Ends a wait the way a deadline does, when stop is requested.
  std::stop_token stop = {};
};

}  // namespace dogpile
