// SPDX-License-Identifier: MIT
// dogpile/detail/async_call.hpp — one asynchronous get_or_create (one key or
// many), whatever the event loop: the call and all it refers to, on the heap
// until the engine is done with it (docs/async.md). The asio binding wraps
// these in completion tokens; tests drive them on their own loop. Not for
// direct use.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dogpile/detail/loop.hpp"
#include "dogpile/region.hpp"

namespace dogpile::detail {

/// How a call's creator gives its values: `Now` returns them (it runs where
/// the loop runs creators); `Later` is started with a callback it calls once,
/// on the loop, with (nullptr, values) or (exception, nullopt) — a
/// coroutine's completion.
enum class Making { now, later };

/// Starts region.get_or_create(key, creator, options, keep) on `loop`;
/// `done` receives (nullptr, value) or (exception, nullopt), once. With
/// Making::later, creator(made) starts the creation and calls
/// made(std::exception_ptr, std::optional<V>) once, on the loop.
template <class V, Making kMaking, class Creator, class Predicate, class Done>
void start_get_or_create(CacheRegion& region, Loop& loop, std::string_view key, Creator creator,
                         CallOptions options, Predicate keep, Done done) {
  struct State {
    State(std::string_view k, Creator c, CallOptions o, Predicate p, Done d)
        : key(k),
          creator(std::move(c)),
          options(std::move(o)),
          keep(std::move(p)),
          done(std::move(d)) {}
    State(const State&) = delete;
    State& operator=(const State&) = delete;

    std::string key;
    Creator creator;
    CallOptions options;
    Predicate keep;
    Done done;
    std::optional<V> value;

    void made(V& v, CreateOut& out) {
      out.keep = static_cast<bool>(std::invoke(keep, std::as_const(v)));
      Codec<V>::encode(v, *out.bytes);
      value = std::move(v);
    }

    struct DecodeFn {
      State* s;
      bool operator()(std::size_t, std::string_view bytes) const {
        s->value = Codec<V>::decode(bytes);
        return s->value.has_value();
      }
    } decode_fn{this};
    struct CreateFn {
      State* s;
      void operator()(std::span<const std::size_t>, std::span<CreateOut> out) const {
        if constexpr (kMaking == Making::now) {
          V v = std::invoke(s->creator);
          s->made(v, out[0]);
        } else {
          throw std::logic_error("dogpile: a coroutine creator in a blocking call");
        }
      }
    } create_fn{this};
    struct StartFn {
      State* s;
      void operator()(std::span<const std::size_t>, std::span<CreateOut> out,
                      CreatedFn done) const {
        if constexpr (kMaking == Making::later) {
          CreateOut* slot = out.data();
          State* state = s;
          std::invoke(s->creator, [state, slot, done = std::move(done)](
                                      std::exception_ptr error, std::optional<V> v) mutable {
            if (!error && !v) error = std::make_exception_ptr(std::logic_error("no value"));
            if (!error) {
              try {
                state->made(*v, *slot);
              } catch (...) {
                error = std::current_exception();
              }
            }
            done(error);
          });
        }
      }
    } start_fn{this};
    struct HoldFn {
      State* s;
      std::shared_ptr<const void> operator()() const {
        if constexpr (std::is_copy_constructible_v<V>) {
          return s->value ? std::make_shared<const V>(*s->value) : nullptr;
        } else {
          return nullptr;
        }
      }
    } hold_fn{this};
    struct TakeFn {
      State* s;
      void operator()(const void* held) const {
        if constexpr (std::is_copy_constructible_v<V>) {
          s->value.emplace(*static_cast<const V*>(held));
        }
      }
    } take_fn{this};

    std::string_view keys[1] = {key};
    DecodeAt decode{decode_fn};
    CreateAt create{create_fn};
    StartCreate start{start_fn};
    Typed typed{&type_tag<V>, FunctionRef<std::shared_ptr<const void>()>(hold_fn),
                FunctionRef<void(const void*)>(take_fn), sizeof(V)};
    Call call{std::span<const std::string_view>(keys),
              decode,
              create,
              options,
              nullptr,
              std::is_copy_constructible_v<V> ? &typed : nullptr,
              kMaking == Making::later ? &start : nullptr};
  };
  require_codable<V>();
  // Owned by the engine's completion (freed once it has run, or if the call
  // could not start).
  auto state = std::make_shared<State>(key, std::move(creator), std::move(options), std::move(keep),
                                       std::move(done));
  State& call = *state;
  region.start_call(call.call, loop, [state](std::exception_ptr error, Outcome outcome) {
    if (error || !state->value) {
      state->done(error ? error : std::make_exception_ptr(std::logic_error("no value")),
                  std::optional<V>());
      return;
    }
    if (state->options.outcome != nullptr) *state->options.outcome = outcome;
    state->done(nullptr, std::move(state->value));
  });
}

// A multi creator's values (checked for count) into the call's slots and
// the engine's envelopes.
template <class T, class Made>
void put_made(std::vector<std::optional<T>>& values, Made& made,
              std::span<const std::size_t> indices, std::span<CreateOut> out) {
  check_created_count(std::ranges::size(made), indices.size());
  std::size_t j = 0;
  for (auto&& v : made) {
    Codec<T>::encode(v, *out[j].bytes);
    values[indices[j]].emplace(std::move(v));
    ++j;
  }
}

/// Starts region.get_or_create_multi(keys, creator, options) on `loop`;
/// `done` receives (nullptr, values in the order of keys) or (exception,
/// nullopt), once. With Making::now, creator(missing) returns a sized range
/// of their values; with Making::later, creator(missing, made) starts their
/// creation and calls made(std::exception_ptr, std::optional<std::vector<T>>)
/// once, on the loop (`missing` is valid only until it returns).
template <class T, Making kMaking, class Creator, class Done>
void start_get_or_create_multi(CacheRegion& region, Loop& loop, std::vector<std::string> keys,
                               Creator creator, CallOptions options, Done done) {
  struct State {
    State(std::vector<std::string> k, Creator c, CallOptions o, Done d)
        : keys(std::move(k)),
          views(keys.begin(), keys.end()),
          creator(std::move(c)),
          options(std::move(o)),
          done(std::move(d)),
          values(keys.size()) {}
    State(const State&) = delete;
    State& operator=(const State&) = delete;

    std::vector<std::string> keys;
    std::vector<std::string_view> views;
    Creator creator;
    CallOptions options;
    Done done;
    std::vector<std::optional<T>> values;

    std::vector<std::string_view> wanted(std::span<const std::size_t> indices) const {
      std::vector<std::string_view> out;
      out.reserve(indices.size());
      for (auto i : indices) out.push_back(views[i]);
      return out;
    }

    struct DecodeFn {
      State* s;
      bool operator()(std::size_t i, std::string_view bytes) const {
        s->values[i] = Codec<T>::decode(bytes);
        return s->values[i].has_value();
      }
    } decode_fn{this};
    struct CreateFn {
      State* s;
      void operator()(std::span<const std::size_t> indices, std::span<CreateOut> out) const {
        if constexpr (kMaking == Making::now) {
          const auto wanted = s->wanted(indices);
          auto made = std::invoke(s->creator, std::span<const std::string_view>(wanted));
          put_made(s->values, made, indices, out);
        } else {
          throw std::logic_error("dogpile: a coroutine creator in a blocking call");
        }
      }
    } create_fn{this};
    struct StartFn {
      State* s;
      void operator()(std::span<const std::size_t> indices, std::span<CreateOut> out,
                      CreatedFn done) const {
        if constexpr (kMaking == Making::later) {
          const auto wanted = s->wanted(indices);
          State* state = s;
          std::invoke(s->creator, std::span<const std::string_view>(wanted),
                      [state, kept = std::vector<std::size_t>(indices.begin(), indices.end()), out,
                       done = std::move(done)](std::exception_ptr error,
                                               std::optional<std::vector<T>> made) mutable {
                        if (!error && !made) {
                          error = std::make_exception_ptr(std::logic_error("no values"));
                        }
                        if (!error) {
                          try {
                            put_made(state->values, *made, kept, out);
                          } catch (...) {
                            error = std::current_exception();
                          }
                        }
                        done(error);
                      });
        }
      }
    } start_fn{this};

    DecodeAt decode{decode_fn};
    CreateAt create{create_fn};
    StartCreate start{start_fn};
    Call call{std::span<const std::string_view>(views),   decode, create, options, nullptr, nullptr,
              kMaking == Making::later ? &start : nullptr};
  };
  require_codable<T>();
  auto state = std::make_shared<State>(std::move(keys), std::move(creator), std::move(options),
                                       std::move(done));
  State& call = *state;
  region.start_call(call.call, loop, [state](std::exception_ptr error, Outcome outcome) {
    if (!error) {
      for (const auto& v : state->values) {
        if (!v) {
          error = std::make_exception_ptr(std::logic_error("no value"));
          break;
        }
      }
    }
    if (error) {
      state->done(error, std::optional<std::vector<T>>());
      return;
    }
    if (state->options.outcome != nullptr) *state->options.outcome = outcome;
    std::vector<T> out;
    out.reserve(state->values.size());
    for (auto& v : state->values) out.push_back(std::move(*v));
    state->done(nullptr, std::optional<std::vector<T>>(std::move(out)));
  });
}

}  // namespace dogpile::detail
