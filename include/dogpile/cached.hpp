// SPDX-License-Identifier: MIT
// dogpile/cached.hpp — wrap a function; its results are cached in a region.
//
// `cached(region, namespace, fn)` returns a callable that answers like `fn`,
// through CacheRegion::get_or_create: the key is the namespace and the
// arguments, formatted with fmt. `cached_multi(region, namespace, fn)` does
// the same for a function over many ids: one multi-get, and `fn` called once
// with the ids that have no usable value.
//
//   auto user_name = dogpile::cached(region, "user_name", [](int id) {
//     return load_user_name(id);  // slow
//   });
//   std::string a = user_name(42);      // created, or from the cache
//   user_name.invalidate(42);           // removed: the next call creates it
//   user_name.invalidate_soft(42);      // stale: served while one call refreshes it
//
//   auto short_lived = dogpile::cached(region, "quote", fetch_quote)
//                          .expiration(std::chrono::seconds(5))
//                          .should_cache([](const std::string& q) { return !q.empty(); });
//
//   auto names = dogpile::cached_multi(region, "user_name", [](std::span<const int> ids) {
//     return load_user_names(ids);  // std::vector<std::string>, in the order of ids
//   });
//   std::vector<std::string> some = names(std::vector<int>{1, 2, 3});
//
// Keys: `namespace|arg1|arg2...`, each argument formatted with fmt ("{}"),
// with '|' and '\' escaped so that different arguments never give the same
// key (an enum as its underlying integer). Arguments may be arithmetic types,
// enums, strings, or types with an fmt::formatter; anything else is a
// compile error that says so. The region maps long or unsafe keys.
//
// The result type needs a dogpile::Codec. Wrappers are cheap to copy (they
// share the function) and thread-safe; the region must outlive them.
// Types: Cached, CachedMulti; functions cached, cached_multi.
#pragma once

#include <fmt/format.h>

#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dogpile/region.hpp"

namespace dogpile {

/// A type that can be part of a cache key.
template <class T>
concept KeyArgument =
    std::is_arithmetic_v<std::remove_cvref_t<T>> || std::is_enum_v<std::remove_cvref_t<T>> ||
    std::convertible_to < const std::remove_cvref_t<T>
&, std::string_view > || fmt::is_formattable<std::remove_cvref_t<T>>::value;

namespace detail {

inline void append_escaped(std::string& key, std::string_view text) {
  for (char c : text) {
    if (c == '|' || c == '\\') key += '\\';
    key += c;
  }
}

template <class T>
void append_key_argument(std::string& key, const T& arg) {
  key += '|';
  if constexpr (std::is_enum_v<T>) {
    fmt::format_to(std::back_inserter(key), "{}", fmt::underlying(arg));
  } else if constexpr (std::is_same_v<T, char>) {
    append_escaped(key, std::string_view(&arg, 1));
  } else if constexpr (std::is_arithmetic_v<T>) {
    fmt::format_to(std::back_inserter(key), "{}", arg);  // no '|' or '\' to escape
  } else if constexpr (std::convertible_to<const T&, std::string_view>) {
    append_escaped(key, std::string_view(arg));
  } else if constexpr (KeyArgument<T>) {
    append_escaped(key, fmt::format("{}", arg));
  }  // else: require_key_arguments has said why it cannot be a key
}

template <class... Args>
constexpr void require_key_arguments() {
  static_assert((KeyArgument<Args> && ...),
                "dogpile::cached: every argument becomes part of the cache key, so its type must "
                "be arithmetic, an enum, a string, or have an fmt::formatter (specialize "
                "fmt::formatter<T> for your type)");
}

template <class... Args>
std::string make_key(std::string_view ns, const Args&... args) {
  require_key_arguments<Args...>();
  std::string key(ns);
  (append_key_argument(key, args), ...);
  return key;
}

// An argument kept by a background regeneration: strings and views are
// copied into a std::string, so the job never points into the caller's frame.
template <class T>
struct OwnedArgument {
  explicit OwnedArgument(const T& v) : value(v) {}
  const T& get() const noexcept { return value; }
  T value;
};
template <>
struct OwnedArgument<std::string_view> {
  explicit OwnedArgument(std::string_view v) : value(v) {}
  std::string_view get() const noexcept { return value; }
  std::string value;
};
template <>
struct OwnedArgument<const char*> {
  explicit OwnedArgument(const char* v) : value(v) {}
  const char* get() const noexcept { return value.c_str(); }
  std::string value;
};

}  // namespace detail

template <class Fn, class Predicate = detail::AlwaysCache>
class Cached {
  template <class... Args>
  using result_t = std::remove_cvref_t<std::invoke_result_t<const Fn&, const Args&...>>;

 public:
  Cached(CacheRegion& region, std::string ns, Fn fn, Predicate predicate = {})
      : region_(&region),
        namespace_(std::move(ns)),
        fn_(std::make_shared<const Fn>(std::move(fn))),
        predicate_(std::make_shared<const Predicate>(std::move(predicate))) {}

  /// A copy whose values are fresh for `expiration` (instead of the region's).
  [[nodiscard]] Cached expiration(Expiration expiration) const {
    Cached copy = *this;
    copy.expiration_ = expiration;
    copy.expiration_fn_ = nullptr;
    return copy;
  }
  /// A copy that asks `fn()` for the expiration on every call.
  template <class ExpirationFn>
  requires std::is_invocable_r_v<Expiration, ExpirationFn&>
  [[nodiscard]] Cached expiration(ExpirationFn fn) const {
    Cached copy = *this;
    copy.expiration_.reset();
    copy.expiration_fn_ = std::move(fn);
    return copy;
  }
  /// A copy that stores a result only if `predicate(result)` is true (the
  /// result is returned either way).
  template <class P>
  [[nodiscard]] Cached<Fn, std::decay_t<P>> should_cache(P predicate) const {
    Cached<Fn, std::decay_t<P>> copy(*region_, namespace_, Fn(*fn_), std::move(predicate));
    copy.expiration_ = expiration_;
    copy.expiration_fn_ = expiration_fn_;
    return copy;
  }

  /// fn(args...), from the cache when fresh there, through get_or_create.
  /// Blocks and throws as CacheRegion::get_or_create does. With the region's
  /// background_refresh on, a stale value's regeneration runs on its
  /// executor with copies of the arguments.
  template <class... Args>
  requires std::invocable<const Fn&, const Args&...>
  auto operator()(const Args&... args) const {
    using R = result_t<Args...>;
    detail::require_codable<R>();
    const std::string key = detail::make_key(namespace_, args...);
    const auto expiration = current_expiration();
    CallOptions options;
    options.expiration = expiration;
    options.background = region_->options().background_refresh;
    auto creator = [&]() -> R { return std::invoke(*fn_, args...); };
    auto make_job = [&]() -> detail::BackgroundCreate {
      if constexpr (Codable<R> && (std::is_copy_constructible_v<std::decay_t<Args>> && ...)) {
        auto owned =
            std::make_tuple(detail::OwnedArgument<std::decay_t<Args>>(std::decay_t<Args>(args))...);
        return [fn = fn_, predicate = predicate_, owned = std::move(owned)](
                   std::span<const std::string_view>, std::span<detail::CreateOut> out) {
          R made = std::apply(
              [&](const auto&... kept) -> R { return std::invoke(*fn, kept.get()...); }, owned);
          out[0].keep = static_cast<bool>(std::invoke(*predicate, std::as_const(made)));
          Codec<R>::encode(made, *out[0].bytes);
        };
      } else {
        return {};
      }
    };
    const Predicate& predicate = *predicate_;
    return region_->template get_or_create_with<R>(key, creator, options, predicate,
                                                   options.background ? &make_job : nullptr);
  }

  /// operator() without blocking a thread (include dogpile/asio.hpp): the
  /// arguments, then an asio completion token; completes with
  /// (std::exception_ptr, result) through CacheRegion::async_get_or_create.
  /// fn is called with copies of the arguments, on the creator pool — or,
  /// if it returns an asio::awaitable, spawned on the caller's executor.
  template <class... ArgsThenToken>
  auto async_call(ArgsThenToken&&... all) const {
    static_assert(sizeof...(ArgsThenToken) >= 1,
                  "dogpile::Cached::async_call takes the arguments, then a completion token");
    constexpr std::size_t n = sizeof...(ArgsThenToken) - 1;
    auto refs = std::forward_as_tuple(std::forward<ArgsThenToken>(all)...);
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return async_with(std::get<n>(std::move(refs)), std::get<I>(refs)...);
    }
    (std::make_index_sequence<n>{});
  }

  /// The fresh cached value for `args`, or nullopt; never calls fn.
  template <class... Args>
  requires std::invocable<const Fn&, const Args&...>
  [[nodiscard]] std::optional<result_t<Args...>> get(const Args&... args) const {
    using R = result_t<Args...>;
    std::optional<R> value;
    auto decode = [&](std::string_view bytes) {
      value = Codec<R>::decode(bytes);
      return value.has_value();
    };
    const auto expiration = current_expiration();
    bool fresh = false;
    if (!region_->get_bytes(detail::make_key(namespace_, args...), decode, nullptr, &fresh,
                            expiration ? &*expiration : nullptr) ||
        !fresh) {
      return std::nullopt;
    }
    return value;
  }

  /// Stores `value` as the result for `args`. False if the backend failed.
  template <class... Args>
  requires std::invocable<const Fn&, const Args&...>
  bool set(const result_t<Args...>& value, const Args&... args) const {
    using R = result_t<Args...>;
    const auto expiration = current_expiration();
    return region_->set_bytes(
        detail::make_key(namespace_, args...),
        [&](std::string& out) { Codec<R>::encode(value, out); },
        expiration ? &*expiration : nullptr);
  }

  /// Removes the cached result for `args` (a tombstone, as
  /// CacheRegion::remove): the next call creates it, and a creation for `args`
  /// that began before this call does not store its value.
  template <class... Args>
  requires std::invocable<const Fn&, const Args&...>
  bool invalidate(const Args&... args) const {
    return region_->remove(detail::make_key(namespace_, args...));
  }

  /// Marks the cached result for `args` stale (CacheRegion::invalidate with
  /// Invalidation::soft): it is still served while one caller recomputes it.
  template <class... Args>
  requires std::invocable<const Fn&, const Args&...>
  bool invalidate_soft(const Args&... args) const {
    return region_->invalidate(detail::make_key(namespace_, args...), Invalidation::soft);
  }

  /// Calls fn(args...) now (no lock), stores the result (if should_cache
  /// allows) and returns it. Throws what fn throws.
  template <class... Args>
  requires std::invocable<const Fn&, const Args&...>
  auto refresh(const Args&... args) const {
    result_t<Args...> value = std::invoke(*fn_, args...);
    if (std::invoke(*predicate_, std::as_const(value))) set(value, args...);
    return value;
  }

  /// The wrapped function.
  [[nodiscard]] const Fn& original() const noexcept { return *fn_; }

  /// The cache key for `args` (before the region's prefix and mapping).
  template <class... Args>
  [[nodiscard]] std::string key(const Args&... args) const {
    return detail::make_key(namespace_, args...);
  }

 private:
  template <class F, class P>
  friend class Cached;

  template <class Token, class... Args>
  auto async_with(Token&& token, const Args&... args) const {
    detail::require_key_arguments<std::decay_t<Args>...>();
    std::string key = detail::make_key(namespace_, args...);
    CallOptions options;
    options.expiration = current_expiration();
    auto creator = [fn = fn_, owned = std::make_tuple(detail::OwnedArgument<std::decay_t<Args>>(
                                  std::decay_t<Args>(args))...)]() {
      return std::apply([&](const auto&... kept) { return std::invoke(*fn, kept.get()...); },
                        owned);
    };
    auto keep = [p = predicate_](const auto& value) {
      return static_cast<bool>(std::invoke(*p, value));
    };
    return region_->async_get_or_create(key, std::move(creator), std::move(options),
                                        std::move(keep), std::forward<Token>(token));
  }

  std::optional<Expiration> current_expiration() const {
    if (expiration_fn_) return expiration_fn_();
    return expiration_;
  }

  CacheRegion* region_;
  std::string namespace_;
  std::shared_ptr<const Fn> fn_;
  std::shared_ptr<const Predicate> predicate_;
  std::optional<Expiration> expiration_;
  std::function<Expiration()> expiration_fn_;
};

/// Caches `fn`'s results in `region` under keys that start with `ns`.
template <class Fn>
[[nodiscard]] Cached<std::decay_t<Fn>> cached(CacheRegion& region, std::string ns, Fn&& fn) {
  return Cached<std::decay_t<Fn>>(region, std::move(ns), std::forward<Fn>(fn));
}

/// A function over many ids, cached per id: fn(std::span<const Id>) returns a
/// std::vector of results in the order of the ids it was given.
template <class Fn>
class CachedMulti {
 public:
  CachedMulti(CacheRegion& region, std::string ns, Fn fn)
      : region_(&region),
        namespace_(std::move(ns)),
        fn_(std::make_shared<const Fn>(std::move(fn))) {}

  /// The results for `ids` (any range), in order: one multi-get, and fn
  /// called once with the ids that have no usable value (if any). Blocks and
  /// throws as CacheRegion::get_or_create_multi does; also throws
  /// std::invalid_argument if fn returns the wrong number of results.
  template <std::ranges::input_range Ids>
  auto operator()(const Ids& ids) const {
    using Id = std::ranges::range_value_t<Ids>;
    detail::require_key_arguments<Id>();
    static_assert(std::invocable<const Fn&, std::span<const Id>>,
                  "dogpile::cached_multi: fn must take one std::span<const Id> of the ids it "
                  "is to compute (one id type, the element type of the range you call with), "
                  "and return a std::vector of results in their order; to key by several "
                  "values, make the id a struct with an fmt::formatter and take a span of it");
    std::vector<Id> all(std::ranges::begin(ids), std::ranges::end(ids));
    std::vector<std::string> keys;
    keys.reserve(all.size());
    std::unordered_map<std::string, std::size_t> index;
    for (std::size_t i = 0; i < all.size(); ++i) {
      keys.push_back(detail::make_key(namespace_, all[i]));
      index.emplace(keys.back(), i);
    }
    CallOptions options;
    options.background = region_->options().background_refresh;
    if constexpr (std::is_copy_constructible_v<Id>) {
      // Owns what it needs: a background regeneration may run after this
      // call has returned, so it keeps copies of the ids it may be asked for.
      auto by_key = std::make_shared<std::unordered_map<std::string, Id>>();
      for (std::size_t i = 0; i < all.size(); ++i) by_key->emplace(keys[i], all[i]);
      return region_->get_or_create_multi(keys, creator_of<Id>(fn_, std::move(by_key)), options);
    } else {
      options.background = false;
      return region_->get_or_create_multi(
          keys,
          [&](std::span<const std::string_view> missing) {
            std::vector<Id> wanted;
            wanted.reserve(missing.size());
            for (auto k : missing) wanted.push_back(all[index.at(std::string(k))]);
            return std::invoke(*fn_, std::span<const Id>(wanted));
          },
          options);
    }
  }

  /// operator() without blocking a thread (include dogpile/asio.hpp): the
  /// ids, then an asio completion token; completes with (std::exception_ptr,
  /// results) through CacheRegion::async_get_or_create_multi. fn runs on the
  /// creator pool.
  template <std::ranges::input_range Ids, class CompletionToken>
  auto async_call(const Ids& ids, CompletionToken&& token) const {
    using Id = std::ranges::range_value_t<Ids>;
    detail::require_key_arguments<Id>();
    static_assert(std::invocable<const Fn&, std::span<const Id>>,
                  "dogpile::cached_multi: fn must take one std::span<const Id> of the ids it "
                  "is to compute, and return a std::vector of results in their order");
    using Result = std::invoke_result_t<const Fn&, std::span<const Id>>;
    static_assert(std::ranges::sized_range<Result>,
                  "dogpile::cached_multi: async_call takes a plain fn returning the results (a "
                  "std::vector), run on the creator pool; for a coroutine, call "
                  "region.async_get_or_create_multi with it");
    auto by_key = std::make_shared<std::unordered_map<std::string, Id>>();
    std::vector<std::string> keys;
    for (const auto& id : ids) {
      keys.push_back(detail::make_key(namespace_, id));
      by_key->emplace(keys.back(), id);
    }
    return region_->async_get_or_create_multi(keys, creator_of<Id>(fn_, std::move(by_key)),
                                              std::forward<CompletionToken>(token));
  }

  /// Removes the cached results for `ids` (tombstones, as CacheRegion::remove).
  template <std::ranges::input_range Ids>
  bool invalidate(const Ids& ids) const {
    std::vector<std::string> keys;
    for (const auto& id : ids) keys.push_back(detail::make_key(namespace_, id));
    return region_->remove_multi(keys);
  }

  [[nodiscard]] const Fn& original() const noexcept { return *fn_; }

 private:
  // The region's creator of the missing keys: fn over their ids, found in
  // `by_key` (its own copies: it may run after the call has returned).
  template <class Id>
  static auto creator_of(std::shared_ptr<const Fn> fn,
                         std::shared_ptr<const std::unordered_map<std::string, Id>> by_key) {
    return [fn = std::move(fn),
            by_key = std::move(by_key)](std::span<const std::string_view> missing) {
      std::vector<Id> wanted;
      wanted.reserve(missing.size());
      for (auto k : missing) wanted.push_back(by_key->at(std::string(k)));
      return std::invoke(*fn, std::span<const Id>(wanted));
    };
  }

  CacheRegion* region_;
  std::string namespace_;
  std::shared_ptr<const Fn> fn_;
};

/// Caches `fn` (ids -> results) per id in `region` under keys that start with `ns`.
template <class Fn>
[[nodiscard]] CachedMulti<std::decay_t<Fn>> cached_multi(CacheRegion& region, std::string ns,
                                                         Fn&& fn) {
  return CachedMulti<std::decay_t<Fn>>(region, std::move(ns), std::forward<Fn>(fn));
}

}  // namespace dogpile
