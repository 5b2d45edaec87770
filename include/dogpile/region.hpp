// dogpile/region.hpp — a cache region: get_or_create with herd protection
// across threads, processes and hosts.
//
// A `CacheRegion` stores values in a Backend (memcached in production) as
// envelopes of (created_at, value) bound to their key, and runs the dogpile
// algorithm over them with two tiers of locking:
//
//   1. in-process: the threads of one process that need the same key share
//      one "flight"; its leader does the work, followers get its value (or
//      its exception) without touching the backend;
//   2. across processes: the leader takes the key's lease (memcached: `add`
//      of a lock item with a time to live, or the meta protocol's lease in the
//      read), so one caller in the whole fleet runs the creator, and its store
//      is fenced: it never lands over a value written while it ran.
//
//   // servers: a libmemcached option string, e.g. "--SERVER=10.0.0.1:11211"
//   auto backend = std::make_shared<dogpile::MemcachedBackend>(servers);
//   dogpile::CacheRegion region(backend, {.expiration = std::chrono::minutes(5),
//                                         .key_prefix = "users:"});
//   std::string name = region.get_or_create("42", [] { return load_user_name(42); });
//
// What a call costs and does (memcached, classic protocol):
//   fresh value        -> one `gets`; returned.
//   stale value        -> (within expiration + stale_grace) one `gets`; if no
//                         one in this process is regenerating it and its lock
//                         is not known to be held elsewhere, one `add` for the
//                         lock; whoever gets it regenerates (re-reading first),
//                         everyone else returns the stale value at once.
//   no usable value    -> one caller per process takes the lock or, if another
//                         process holds it, polls (value and lock in one
//                         request) until the value appears or the lock is
//                         free; it sleeps until the value is due when the lock
//                         says so. The other callers of the process wait for it.
//   creator throws     -> the exception reaches this caller and the callers
//                         waiting on it; nothing is stored; the lock is released
//                         (with serve_stale_on_error and a stale value at hand:
//                         the stale value instead, and the error to the handler).
//   backend fails      -> never an exception from get_or_create: the error goes
//                         to the error handler and stats(), and the caller falls
//                         back to in-process protection (the flight) and the creator.
//   deadline passes    -> the stale value if one is at hand, else WaitTimeout.
//
// Options beyond that: background regeneration (the stale winner also returns
// the stale value and the new one is made on an Executor), serve-stale-on-
// error, probabilistic early recomputation (XFetch), per-call expiration,
// deadlines and cancellation, and invalidate(hard | soft), seen by every
// process within RegionOptions::invalidation_check. Every option applies to
// get_or_create_multi as well.
//
// Types: ErrorKind, ErrorEvent, ErrorHandler, WaitTimeout, WaitPolicy,
// LocalTier, RegionOptions, RegionStats, CachedValue, Deadline, CallOptions, Invalidation,
// CacheRegion.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/detail/function_ref.hpp"
#include "dogpile/executor.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/metrics.hpp"

namespace dogpile {

/// What went wrong, for the error handler.
enum class ErrorKind {
  backend,  ///< a backend operation failed (server down, timeout, item too large, ...)
  decode,   ///< a stored item was not a readable envelope or value: treated as a miss
  lock,     ///< a distributed lock was lost, or its creator was declared hung
  creator,  ///< a creator threw where no caller receives the exception: in the
            ///< background, or replaced by the stale value (serve_stale_on_error)
  fenced,   ///< a creation's store was refused because the key was written (set,
            ///< removed, or created elsewhere) while it ran: its value reached its
            ///< callers but was not stored
};

[[nodiscard]] const char* to_string(ErrorKind kind) noexcept;

/// One reported error. The views are valid only during the handler call.
struct ErrorEvent {
  ErrorKind kind;
  std::string_view operation;  ///< e.g. "get", "set", "lock", "decode"
  std::string_view key;        ///< the user's key, as given
  std::string_view message;    ///< no pointer addresses or library source paths
  std::string_view server{};   ///< the server that failed ("host:port"), if known
  /// A stable name of what failed, for grouping: BackendError::code() for
  /// backend errors; for decode errors the envelope's refusal
  /// ("key_mismatch", "bad_compression", ...) or "codec"; empty if unknown.
  std::string_view code{};
};

/// Called for every reported error, from the calling thread or from the
/// region's background thread; it must be thread-safe and should be quick.
/// Exceptions it throws are swallowed.
using ErrorHandler = std::function<void(const ErrorEvent&)>;

/// Thrown by get_or_create (and the wrappers) when a caller that has no value
/// at hand stops waiting for another's creation: its deadline passed, its
/// stop token was triggered, or WaitPolicy::max_wait ran out.
class WaitTimeout : public std::runtime_error {
 public:
  enum class Reason { deadline, cancelled, max_wait };
  WaitTimeout(Reason reason, std::string_view key);
  [[nodiscard]] Reason reason() const noexcept { return reason_; }

 private:
  Reason reason_;
};

/// How a caller that finds no value waits while another process creates it.
/// It polls one request at a time (the value and the lock together).
struct WaitPolicy {
  /// Shortest pause between polls.
  Duration first_poll = std::chrono::milliseconds(1);
  /// The pause around the moment the value is due. When the lock says when
  /// its holder started and how long the previous creation took, the waiter
  /// sleeps until then and polls every max_poll from there: a value is seen
  /// within about max_poll of being stored.
  Duration max_poll = std::chrono::milliseconds(5);
  /// With no such history (or past it), the pause is this fraction of the
  /// time waited so far (of the overrun, past the due time), between
  /// first_poll and max_interval: a 5 s creation costs about 50 polls.
  double growth = 1.0 / 6;
  Duration max_interval = std::chrono::seconds(1);
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
struct LocalTier {
  /// How long a value is served from this process without asking the
  /// backend: the staleness bound for other processes' writes.
  Duration ttl = std::chrono::seconds(1);
  /// Bounds: items, and bytes (keys, values and bookkeeping); the least
  /// recently used items go first.
  std::size_t max_entries = 100'000;
  std::size_t max_bytes = std::size_t{64} << 20;
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

/// Counts since the region was made. Every get_or_create call that returns
/// counts in exactly one of hits, local_hits, stale_served, waited or created; a creator
/// that throws counts in creation_errors (and its caller, if it was served
/// the stale value instead, in stale_served). get_or_create_multi counts per
/// key.
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
  std::size_t local_entries = 0;     ///< items in the local tier now
  std::size_t local_bytes = 0;       ///< their cost against LocalTier::max_bytes
  std::uint64_t compressed = 0;      ///< values compressed to be stored (Compression)
};

/// A stored value with its metadata, from CacheRegion::get_value_metadata.
template <class T>
struct CachedValue {
  T value;
  TimePoint created_at;  ///< on the fleet clock
  bool fresh;            ///< false: expired, but within the stale grace
};

namespace detail {
struct Deduced {};

// For a static_assert that must fire only when its template is used.
template <class...>
inline constexpr bool always_false_v = false;
template <class T, class Creator>
using created_value_t = std::conditional_t<std::is_same_v<T, Deduced>,
                                           std::remove_cvref_t<std::invoke_result_t<Creator&>>, T>;

struct AlwaysCache {
  template <class T>
  constexpr bool operator()(const T&) const noexcept {
    return true;
  }
};

/// Where a creation writes one key's value: its encoded bytes are appended to
/// `bytes`; `keep` false: return it, do not store it (should_cache).
struct CreateOut {
  std::string* bytes = nullptr;
  bool keep = true;
};

/// A creation that owns what it needs, for background regeneration: called
/// with the user keys to make, writes each one's value.
using BackgroundCreate =
    std::function<void(std::span<const std::string_view> keys, std::span<CreateOut> out)>;

template <class R>
concept key_range = std::ranges::input_range<R> &&
    std::convertible_to<std::ranges::range_reference_t<R>, std::string_view>;

template <class T>
constexpr void require_codable() {
  static_assert(Codable<T>,
                "dogpile: no usable dogpile::Codec<T> for this value type; specialize "
                "dogpile::Codec<T> with encode(const T&, std::string&) and "
                "decode(std::string_view) -> std::optional<T> (see dogpile/codec.hpp)");
}

template <class R>
std::vector<std::string_view> key_views(const R& keys) {
  std::vector<std::string_view> views;
  if constexpr (std::ranges::sized_range<R>) views.reserve(std::ranges::size(keys));
  for (auto&& k : keys) views.emplace_back(k);
  return views;
}
}  // namespace detail

template <class Fn, class Predicate>
class Cached;
template <class Fn>
class CachedMulti;

/// Thread-safe: every member may be called from any number of threads.
/// Fork-safe: a region used before fork() works in the parent and the child
/// (the child opens its own connections and threads).
class CacheRegion {
 public:
  /// Throws std::invalid_argument if `backend` is null or an option is out of
  /// range (the message says which and why).
  explicit CacheRegion(std::shared_ptr<Backend> backend, RegionOptions options = {});
  /// Abandons background regenerations that have not started (releasing
  /// their locks), waits for those running, and stops the region's thread.
  /// Calls still running on other threads must have returned.
  ~CacheRegion();
  CacheRegion(const CacheRegion&) = delete;
  CacheRegion& operator=(const CacheRegion&) = delete;

  /// The value for `key` (any bytes): fresh from the backend, or stale while
  /// another caller regenerates it, or made by `creator()` — by exactly one
  /// caller across every process sharing the backend. The value type is what
  /// `creator` returns, or T if given. Blocks only when no usable value
  /// exists (until this or another caller has made one, or the deadline).
  /// Throws what `creator` throws (to this caller and to the callers of this
  /// process waiting on it), WaitTimeout, or std::bad_alloc; backend failures
  /// never escape. `outcome`, if given, receives how the call was served.
  template <class T = detail::Deduced, class Creator>
  requires std::invocable<Creator&> detail::created_value_t<T, Creator> get_or_create(
      std::string_view key, Creator&& creator, Outcome* outcome = nullptr) {
    return get_or_create<T>(key, std::forward<Creator>(creator), CallOptions{.outcome = outcome});
  }

  /// A creator that cannot be called with no arguments: a compile error that
  /// says what to write.
  template <class T = detail::Deduced, class Creator, class... Rest>
  requires(!std::invocable<Creator&>) auto get_or_create(std::string_view, Creator&&, Rest&&...) {
    static_assert(detail::always_false_v<Creator>,
                  "dogpile: get_or_create's creator must be callable with no arguments and "
                  "return the value to cache, e.g. region.get_or_create(key, [&] { return "
                  "load(id); }); for many keys at once, use get_or_create_multi, whose creator "
                  "takes std::span<const std::string_view>");
    return detail::Deduced{};
  }

  /// get_or_create with per-call options, and `should_cache(value)`: a value
  /// for which it returns false is returned (to this caller and those waiting
  /// on it) but not stored.
  template <class T = detail::Deduced, class Creator, class ShouldCache = detail::AlwaysCache>
  requires std::invocable<Creator&> detail::created_value_t<T, Creator> get_or_create(
      std::string_view key, Creator&& creator, const CallOptions& options,
      ShouldCache&& should_cache = {}) {
    using V = detail::created_value_t<T, Creator>;
    using Stored = std::decay_t<Creator>;
    using Predicate = std::decay_t<ShouldCache>;
    detail::require_codable<V>();
    auto make_job = [&]() -> detail::BackgroundCreate {
      if constexpr (Codable<V> && std::is_copy_constructible_v<Stored> &&
                    std::is_copy_constructible_v<Predicate>) {
        return [c = Stored(creator), p = Predicate(should_cache)](
                   std::span<const std::string_view>, std::span<detail::CreateOut> out) mutable {
          V made = std::invoke(c);
          out[0].keep = static_cast<bool>(std::invoke(p, std::as_const(made)));
          Codec<V>::encode(made, *out[0].bytes);
        };
      } else {
        return {};  // not copyable: regenerated in the calling thread
      }
    };
    return get_or_create_with<V>(key, creator, options, should_cache,
                                 options.background ? &make_job : nullptr);
  }

  /// The fresh value under `key`, or nullopt (missing, expired, unreadable,
  /// or the backend failed). One backend `get`. Never throws but std::bad_alloc.
  template <class T>
  [[nodiscard]] std::optional<T> get(std::string_view key) {
    detail::require_codable<T>();
    std::optional<T> value;
    auto decode = [&](std::string_view bytes) {
      value = Codec<T>::decode(bytes);
      return value.has_value();
    };
    bool fresh = false;
    if (!get_bytes(key, decode, nullptr, &fresh) || !fresh) value.reset();
    return value;
  }

  /// The value under `key` with its creation time, fresh or stale (expired
  /// but within the stale grace); nullopt if missing, too old, unreadable, or
  /// the backend failed. One backend `get`. Never throws but std::bad_alloc.
  template <class T>
  [[nodiscard]] std::optional<CachedValue<T>> get_value_metadata(std::string_view key) {
    detail::require_codable<T>();
    std::optional<T> value;
    auto decode = [&](std::string_view bytes) {
      value = Codec<T>::decode(bytes);
      return value.has_value();
    };
    TimePoint created_at;
    bool fresh = false;
    if (!get_bytes(key, decode, &created_at, &fresh)) return std::nullopt;
    return CachedValue<T>{std::move(*value), created_at, fresh};
  }

  /// Stores `value` under `key`, created now. A creation of `key` in progress
  /// anywhere will not store over it. False if the backend failed (reported
  /// to the error handler). Throws what Codec<T>::encode throws (the protobuf
  /// adapter refuses a message missing required fields), else only
  /// std::bad_alloc.
  template <class T>
  bool set(std::string_view key, const T& value) {
    detail::require_codable<T>();
    return set_bytes(key, [&](std::string& out) { Codec<T>::encode(value, out); });
  }

  /// Removes the value under `key`: writes a short-lived tombstone (a miss
  /// for every reader) rather than deleting, so that a creation of `key` that
  /// began before the removal cannot store its (older) value over it. False
  /// if there was no value or the backend failed. Never throws but std::bad_alloc.
  bool remove(std::string_view key);

  /// The fresh values under `keys`, in order (nullopt where missing, expired
  /// or unreadable), from one backend multi-get. Never throws but std::bad_alloc.
  template <class T, detail::key_range Keys>
  [[nodiscard]] std::vector<std::optional<T>> get_multi(const Keys& keys) {
    detail::require_codable<T>();
    const auto views = detail::key_views(keys);
    std::vector<std::optional<T>> values(views.size());
    get_multi_bytes(views, [&](std::size_t i, std::string_view bytes) {
      values[i] = Codec<T>::decode(bytes);
      return values[i].has_value();
    });
    return values;
  }
  template <class T>
  [[nodiscard]] std::vector<std::optional<T>> get_multi(
      std::initializer_list<std::string_view> keys) {
    return get_multi<T, std::initializer_list<std::string_view>>(keys);
  }

  /// Stores every (key, value) pair of `items` (e.g. a std::map or a vector of
  /// pairs), created now. False if the backend failed for any. Throws what
  /// Codec<T>::encode throws, else only std::bad_alloc.
  template <std::ranges::input_range Items>
  bool set_multi(const Items& items) {
    using Pair = std::ranges::range_value_t<Items>;
    using T = std::remove_cvref_t<std::tuple_element_t<1, Pair>>;
    detail::require_codable<T>();
    std::vector<std::string_view> keys;
    std::vector<const T*> values;
    for (const auto& [k, v] : items) {
      keys.emplace_back(k);
      values.push_back(&v);
    }
    return set_multi_bytes(
        keys, [&](std::size_t i, std::string& out) { Codec<T>::encode(*values[i], out); });
  }

  /// Removes every key (with tombstones, as remove()). False if the backend
  /// failed. Never throws but std::bad_alloc.
  template <detail::key_range Keys>
  bool remove_multi(const Keys& keys) {
    return remove_multi_bytes(detail::key_views(keys));
  }
  bool remove_multi(std::initializer_list<std::string_view> keys) {
    return remove_multi_bytes(std::vector<std::string_view>(keys));
  }

  /// get_or_create for many keys at once: one backend multi-get for all of
  /// them; `creator(missing)` is called once with the keys that have no usable
  /// value and that this caller won the lock for (a std::span of
  /// std::string_view), and must return a sized range of their values in the
  /// same order (a std::vector). Keys that another caller is creating are
  /// waited for; stale keys that another caller is regenerating are served
  /// stale. Locks are tried in a fixed (sorted) order. If a lock holder in
  /// another process dies, its keys are created by a further creator call.
  /// Throws what `creator` throws, WaitTimeout, or std::invalid_argument if it
  /// returns the wrong number of values.
  template <detail::key_range Keys, class Creator>
  requires std::invocable<Creator&, std::span<const std::string_view>>
  auto get_or_create_multi(const Keys& keys, Creator&& creator) {
    return get_or_create_multi(keys, std::forward<Creator>(creator), CallOptions{});
  }
  template <class Creator>
  requires std::invocable<Creator&, std::span<const std::string_view>>
  auto get_or_create_multi(std::initializer_list<std::string_view> keys, Creator&& creator) {
    return get_or_create_multi(std::vector<std::string_view>(keys), std::forward<Creator>(creator),
                               CallOptions{});
  }

  /// A creator that cannot take the missing keys: a compile error that says
  /// what to write.
  template <class Keys, class Creator, class... Rest>
  requires(!std::invocable<Creator&, std::span<const std::string_view>>) void get_or_create_multi(
      const Keys&, Creator&&, Rest&&...) {
    static_assert(detail::always_false_v<Creator>,
                  "dogpile: get_or_create_multi's creator must take the keys it is to make, "
                  "as std::span<const std::string_view>, and return their values in order, "
                  "e.g. [&](std::span<const std::string_view> missing) { return "
                  "load_all(missing); } returning std::vector<T>");
  }
  template <class Creator, class... Rest>
  requires(!std::invocable<Creator&, std::span<const std::string_view>>) void get_or_create_multi(
      std::initializer_list<std::string_view> keys, Creator&& creator, Rest&&... rest) {
    get_or_create_multi(std::vector<std::string_view>(keys), std::forward<Creator>(creator),
                        std::forward<Rest>(rest)...);
  }

  /// get_or_create_multi with per-call options (every option of
  /// get_or_create applies, per key) and `should_cache(value)`.
  template <detail::key_range Keys, class Creator, class ShouldCache = detail::AlwaysCache>
  requires std::invocable<Creator&, std::span<const std::string_view>>
  auto get_or_create_multi(const Keys& keys, Creator&& creator, const CallOptions& options,
                           ShouldCache&& should_cache = {}) {
    using Result =
        std::remove_cvref_t<std::invoke_result_t<Creator&, std::span<const std::string_view>>>;
    static_assert(
        std::ranges::sized_range<Result> && !std::is_convertible_v<const Result&, std::string_view>,
        "dogpile: get_or_create_multi's creator must return a sized range of values "
        "(e.g. std::vector<T>), one per key it was given, in order; a std::string is "
        "a range of characters, not of values: return std::vector<std::string>");
    using T = std::remove_cvref_t<std::ranges::range_value_t<Result>>;
    using Stored = std::decay_t<Creator>;
    using Predicate = std::decay_t<ShouldCache>;
    detail::require_codable<T>();
    const auto views = detail::key_views(keys);
    std::vector<std::optional<T>> values(views.size());
    auto decode = [&](std::size_t i, std::string_view bytes) {
      values[i] = Codec<T>::decode(bytes);
      return values[i].has_value();
    };
    auto create = [&](std::span<const std::size_t> indices, std::span<detail::CreateOut> out) {
      std::vector<std::string_view> wanted;
      wanted.reserve(indices.size());
      for (auto i : indices) wanted.push_back(views[i]);
      Result made = std::invoke(creator, std::span<const std::string_view>(wanted));
      check_created_count(std::ranges::size(made), indices.size());
      std::size_t j = 0;
      for (auto&& v : made) {
        out[j].keep = static_cast<bool>(std::invoke(should_cache, std::as_const(v)));
        Codec<T>::encode(v, *out[j].bytes);
        values[indices[j]].emplace(std::move(v));
        ++j;
      }
    };
    auto make_job = [&]() -> detail::BackgroundCreate {
      if constexpr (std::is_copy_constructible_v<Stored> &&
                    std::is_copy_constructible_v<Predicate>) {
        return [c = Stored(creator), p = Predicate(should_cache)](
                   std::span<const std::string_view> wanted,
                   std::span<detail::CreateOut> out) mutable {
          Result made = std::invoke(c, wanted);
          check_created_count(std::ranges::size(made), wanted.size());
          std::size_t j = 0;
          for (auto&& v : made) {
            out[j].keep = static_cast<bool>(std::invoke(p, std::as_const(v)));
            Codec<T>::encode(v, *out[j].bytes);
            ++j;
          }
        };
      } else {
        return {};
      }
    };
    std::optional<detail::FunctionRef<detail::BackgroundCreate()>> job_ref;
    if (options.background) job_ref.emplace(make_job);
    run(Call{views, decode, create, options, job_ref ? &*job_ref : nullptr});
    std::vector<T> out;
    out.reserve(values.size());
    for (auto& v : values) out.push_back(std::move(*v));
    return out;
  }

  /// A snapshot of the counters. Never blocks.
  [[nodiscard]] RegionStats stats() const noexcept;
  /// Latency histograms of calls (per result) and creators, and backend
  /// requests by operation (see dogpile/metrics.hpp). Thread-safe.
  [[nodiscard]] RegionMetrics metrics() const noexcept;

  /// Keys this process is creating, or waiting for, right now: the region
  /// keeps per-key state only while a key is in flight, so this is 0 when
  /// idle, however many keys have passed through. Thread-safe.
  [[nodiscard]] std::size_t in_flight() const;

  /// Makes every value of this region stored before now a miss (hard) or
  /// stale (soft), in this process at once and in every process sharing the
  /// backend within their invalidation_check. Writes the region's
  /// invalidation record (`<key_prefix>#inv`). Never throws but
  /// std::bad_alloc; a backend failure is reported and applies the
  /// invalidation to this process only.
  void invalidate(Invalidation kind = Invalidation::hard);

  /// Invalidates one key, at once for every process. hard: as remove() (a
  /// tombstone; the next caller regenerates, the others wait). soft: the
  /// value stays and is stale: served while one caller regenerates it. On
  /// MemcachedMetaBackend that is one `md <key> I` (the server marks the
  /// item stale and hands the next reader the right to refresh it); on other
  /// backends the value is rewritten marked stale (gets, then cas: two
  /// requests). The stale value then lives max(stale_grace, lock_timeout),
  /// time enough for one caller to refresh it. False if there was no value
  /// (or the backend failed: reported). Never throws but std::bad_alloc.
  bool invalidate(std::string_view key, Invalidation kind = Invalidation::hard);

  /// How far the fleet clock (the server's) is ahead of this host's clock, as
  /// last measured (zero until the first call, or without clock_sync).
  [[nodiscard]] Duration clock_offset() const noexcept;

  /// Replaces the error handler (empty: the default stderr handler).
  /// Thread-safe; calls already reporting may still use the old one.
  void set_error_handler(ErrorHandler handler);

  [[nodiscard]] const RegionOptions& options() const noexcept;
  [[nodiscard]] Backend& backend() const noexcept;

  /// The backend key that `key` is stored under (README, "Keys").
  [[nodiscard]] std::string backend_key(std::string_view key) const;

 private:
  template <class Fn, class Predicate>
  friend class Cached;
  template <class Fn>
  friend class CachedMulti;

  using DecodeAt = detail::FunctionRef<bool(std::size_t, std::string_view)>;
  using CreateAt =
      detail::FunctionRef<void(std::span<const std::size_t>, std::span<detail::CreateOut>)>;
  using Decode = detail::FunctionRef<bool(std::string_view)>;
  using Encode = detail::FunctionRef<void(std::string&)>;
  using EncodeAt = detail::FunctionRef<void(std::size_t, std::string&)>;

  /// One call of the engine: user keys (they may repeat), how to decode a
  /// value into slot i, how to create the values of some slots, and the
  /// options. Returns the Outcome of the first key.
  struct Call {
    std::span<const std::string_view> keys;
    DecodeAt decode;
    CreateAt create;
    const CallOptions& options;
    detail::FunctionRef<detail::BackgroundCreate()>* make_job;  // nullptr: no background
  };
  Outcome run(const Call& call);

  // get_or_create's body. `make_job`, if not null, makes an owning copy of the
  // work for a background regeneration.
  template <class V, class Creator, class ShouldCache, class MakeJob>
  V get_or_create_with(std::string_view key, Creator& creator, const CallOptions& options,
                       ShouldCache& should_cache, MakeJob* make_job) {
    detail::require_codable<V>();
    std::optional<V> value;
    auto decode = [&](std::size_t, std::string_view bytes) {
      value = Codec<V>::decode(bytes);
      return value.has_value();
    };
    auto create = [&](std::span<const std::size_t>, std::span<detail::CreateOut> out) {
      V made = std::invoke(creator);
      out[0].keep = static_cast<bool>(std::invoke(should_cache, std::as_const(made)));
      Codec<V>::encode(made, *out[0].bytes);
      value = std::move(made);
    };
    std::optional<detail::FunctionRef<detail::BackgroundCreate()>> job_ref;
    if (make_job != nullptr) job_ref.emplace(*make_job);
    const std::string_view keys[] = {key};
    const Outcome served = run(Call{keys, decode, create, options, job_ref ? &*job_ref : nullptr});
    if (options.outcome != nullptr) *options.outcome = served;
    return std::move(*value);
  }

  // Reads `key`; true if a fresh or stale value decoded, with its creation
  // time and freshness (each optional), judged by `expiration` (nullptr: the region's).
  bool get_bytes(std::string_view key, Decode decode, TimePoint* created_at, bool* fresh,
                 const Expiration* expiration = nullptr);
  bool set_bytes(std::string_view key, Encode encode, const Expiration* expiration = nullptr);
  void get_multi_bytes(std::span<const std::string_view> keys, DecodeAt decode);
  bool set_multi_bytes(std::span<const std::string_view> keys, EncodeAt encode);
  bool remove_multi_bytes(std::span<const std::string_view> keys);
  static void check_created_count(std::size_t got, std::size_t wanted);

  class Engine;
  std::unique_ptr<Engine> engine_;
};

}  // namespace dogpile
