// SPDX-License-Identifier: MIT
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
// Types: CachedValue, CacheRegion; its options are in dogpile/options.hpp,
// its counts in dogpile/stats.hpp, what it reports and throws in
// dogpile/errors.hpp.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
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
#include "dogpile/errors.hpp"
#include "dogpile/metrics.hpp"
#include "dogpile/options.hpp"
#include "dogpile/outcome.hpp"
#include "dogpile/stats.hpp"

namespace dogpile {

struct RegionConfig;  // dogpile/config.hpp

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

/// A creation that completes later (a coroutine creator of an asynchronous
/// call): starts making the values of the slots at `indices` into `out`,
/// and calls `done` once, on the call's loop, with nullptr or what the
/// creator threw. `out` stays valid until then.
using CreatedFn = std::function<void(std::exception_ptr)>;
/// Throws std::invalid_argument unless a multi creator made `wanted` values.
void check_created_count(std::size_t got, std::size_t wanted);

using StartCreate = FunctionRef<void(std::span<const std::size_t> indices, std::span<CreateOut> out,
                                     CreatedFn done)>;

template <class R>
concept key_range = std::ranges::input_range<R> &&
    std::convertible_to<std::ranges::range_reference_t<R>, std::string_view>;

// Named so that the compiler's note under a failed check names the type.
template <class ValueType>
inline constexpr bool value_type_has_a_codec = Codable<ValueType>;

template <class T>
inline constexpr bool is_c_string = std::is_pointer_v<std::decay_t<T>>&&
    std::is_same_v<std::remove_cv_t<std::remove_pointer_t<std::decay_t<T>>>, char>;

// The commonest slips first, each with its fix; then any type with no codec.
template <class T>
constexpr void require_codable() {
  if constexpr (std::is_void_v<T>) {
    static_assert(!std::is_void_v<T>,
                  "dogpile: the creator returns nothing (void); it must return the value to "
                  "cache, e.g. region.get_or_create(key, [&] { return load(id); })");
  } else if constexpr (is_c_string<T>) {
    static_assert(!is_c_string<T>,
                  "dogpile: the creator returns a C string (const char*), a pointer that cannot "
                  "be cached; return a std::string: [] { return std::string(\"Ada\"); }");
  } else {
    static_assert(value_type_has_a_codec<T>,
                  "dogpile: no dogpile::Codec for this value type (the note below names it as "
                  "value_type_has_a_codec<T>). For a struct, one line: template <> struct "
                  "dogpile::Codec<T> : dogpile::MemberCodec<&T::a, &T::b, ...> {}; for JSON, "
                  "MessagePack or Protocol Buffers types, include dogpile/codec/json.hpp, "
                  "dogpile/codec/msgpack.hpp or dogpile/codec/protobuf.hpp; or specialize "
                  "dogpile::Codec<T> with encode and decode (see dogpile/codec.hpp)");
  }
}

template <class R>
std::vector<std::string_view> key_views(const R& keys) {
  std::vector<std::string_view> views;
  if constexpr (std::ranges::sized_range<R>) views.reserve(std::ranges::size(keys));
  for (auto&& k : keys) views.emplace_back(k);
  return views;
}

class Engine;  // lib/engine/engine.hpp
class Loop;    // dogpile/detail/loop.hpp

// How a region's templates hand a call to its engine: the bytes of a value
// decoded into (or encoded from) the caller's slot i.
using DecodeAt = FunctionRef<bool(std::size_t, std::string_view)>;
using CreateAt = FunctionRef<void(std::span<const std::size_t>, std::span<CreateOut>)>;
using Decode = FunctionRef<bool(std::string_view)>;
using Encode = FunctionRef<void(std::string&)>;
using EncodeAt = FunctionRef<void(std::size_t, std::string&)>;

// A value type's identity: one object per type, its address the tag. Each
// holds its own address, so no two are alike (a linker folding identical
// constants could not make two types' tags one).
template <class V>
inline constexpr const void* type_tag = &type_tag<V>;

/// How a one-key call's value is held decoded in the local tier, and
/// served from there with no decode: `type` names the value type (held
/// values of another type are decoded as usual), `hold` copies the value
/// just decoded, `take` copies a held one into the caller's slot, `size`
/// is the type's own (a held copy is counted as it and its encoded bytes).
struct Typed {
  const void* type;
  FunctionRef<std::shared_ptr<const void>()> hold;
  FunctionRef<void(const void*)> take;
  std::size_t size = 0;  // sizeof the type: what a held copy costs, with its bytes
};

/// One call of the engine: user keys (they may repeat), how to decode a
/// value into slot i, how to create the values of some slots, and the
/// options. The engine returns the Outcome of the costliest key.
struct Call {
  std::span<const std::string_view> keys;
  DecodeAt decode;
  CreateAt create;
  const CallOptions& options;
  FunctionRef<BackgroundCreate()>* make_job;  // nullptr: no background
  const Typed* typed = nullptr;               // one key: its value held decoded
  const StartCreate* start_create = nullptr;  // asynchronous calls: instead of `create`
};
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
  /// A region from settings: region_config(settings) (dogpile/config.hpp).
  explicit CacheRegion(RegionConfig config);
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
      detail::check_created_count(std::ranges::size(made), indices.size());
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
          detail::check_created_count(std::ranges::size(made), wanted.size());
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

  /// The backend key that `key` is stored under (docs/design.md, "Keys").
  [[nodiscard]] std::string backend_key(std::string_view key) const;

  // Without blocking a thread: defined in dogpile/asio.hpp, which a caller
  // includes (docs/async.md). Each takes an asio completion token (a
  // callback, use_future, use_awaitable) and completes with
  // (std::exception_ptr, result) on the handler's executor.

  /// get_or_create: completes with the value (V{} on error). `creator` is a
  /// plain function (run on the creator pool) or returns an
  /// asio::awaitable<V> (spawned on the caller's executor).
  template <class T = detail::Deduced, class Creator, class CompletionToken>
  auto async_get_or_create(std::string_view key, Creator creator, CompletionToken&& token);
  template <class T = detail::Deduced, class Creator, class CompletionToken>
  auto async_get_or_create(std::string_view key, Creator creator, CallOptions options,
                           CompletionToken&& token);
  template <class T = detail::Deduced, class Creator, class ShouldCache, class CompletionToken>
  auto async_get_or_create(std::string_view key, Creator creator, CallOptions options,
                           ShouldCache should_cache, CompletionToken&& token);
  /// get_or_create_multi: completes with the values in the order of `keys`.
  template <detail::key_range Keys, class Creator, class CompletionToken>
  auto async_get_or_create_multi(const Keys& keys, Creator creator, CompletionToken&& token);
  template <detail::key_range Keys, class Creator, class CompletionToken>
  auto async_get_or_create_multi(const Keys& keys, Creator creator, CallOptions options,
                                 CompletionToken&& token);
  /// get: completes with the fresh value or nullopt.
  template <class T, class CompletionToken>
  auto async_get(std::string_view key, CompletionToken&& token);
  /// set: completes with false if the backend failed.
  template <class T, class CompletionToken>
  auto async_set(std::string_view key, const T& value, CompletionToken&& token);
  /// remove: completes with false if there was no value or the backend failed.
  template <class CompletionToken>
  auto async_remove(std::string_view key, CompletionToken&& token);

  /// For the asynchronous bindings (dogpile/asio.hpp), not for direct use:
  /// runs `call` on `loop`, holding no thread while it waits; `done` gets
  /// its Outcome or exception, and whether it runs in a turn of the loop of
  /// its own (`own_turn`: not within this call, nor within the engine's
  /// frames, so it may complete the caller in place, and may throw).
  /// `call` must live until then.
  void start_call(const detail::Call& call, detail::Loop& loop,
                  std::function<void(std::exception_ptr, Outcome, bool own_turn)> done);

 private:
  template <class Fn, class Predicate>
  friend class Cached;
  template <class Fn>
  friend class CachedMulti;

  using DecodeAt = detail::DecodeAt;
  using CreateAt = detail::CreateAt;
  using Decode = detail::Decode;
  using Encode = detail::Encode;
  using EncodeAt = detail::EncodeAt;
  using Call = detail::Call;
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
    auto hold = [&]() -> std::shared_ptr<const void> {
      if constexpr (std::is_copy_constructible_v<V>) {
        return value ? std::make_shared<const V>(*value) : nullptr;
      } else {
        return nullptr;
      }
    };
    auto take = [&](const void* held) {
      if constexpr (std::is_copy_constructible_v<V>) value.emplace(*static_cast<const V*>(held));
    };
    const detail::Typed typed{&detail::type_tag<V>, hold, take, sizeof(V)};
    const Outcome served = run(Call{keys, decode, create, options, job_ref ? &*job_ref : nullptr,
                                    std::is_copy_constructible_v<V> ? &typed : nullptr});
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

  std::unique_ptr<detail::Engine> engine_;
};

}  // namespace dogpile
