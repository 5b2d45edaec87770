// SPDX-License-Identifier: MIT
// dogpile/detail/async_call.hpp — one asynchronous get_or_create (one key or
// many), whatever the event loop: the call and all it refers to, on the heap
// until the engine is done with it (docs/async.md). The asio binding wraps
// these in completion tokens; tests drive them on their own loop. Not for
// direct use.
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
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

#include "dogpile/detail/loop.hpp"
#include "dogpile/region.hpp"

namespace dogpile::detail {

/// How a call's creator gives its values: `Now` returns them (it runs where
/// the loop runs creators); `Later` is started with a callback it calls once,
/// on the loop, with (nullptr, values) or (exception, nullopt) — a
/// coroutine's completion.
enum class Making { now, later };

/// One region.get_or_create(key, creator, options, keep) to start on a
/// loop (start_get_or_create), its `done` set first: it receives (nullptr,
/// value) or (exception, nullopt), once. With Making::later, creator(made)
/// starts the creation and calls made(std::exception_ptr, std::optional<V>)
/// once, on the loop. Made before the call's completion handler is known,
/// so that an asio initiation carries one pointer, not the arguments.
template <class V, Making kMaking, class Creator, class Predicate>
struct GetOrCreateCall {
  GetOrCreateCall(std::string_view k, Creator c, CallOptions o, Predicate p)
      : key(k),
        creator(std::move(c)),
        options(std::move(o)),
        keep(std::move(p)),
        caller_stop(options.stop) {}
  GetOrCreateCall(const GetOrCreateCall&) = delete;
  GetOrCreateCall& operator=(const GetOrCreateCall&) = delete;
  using State = GetOrCreateCall;

  std::string key;
  Creator creator;
  CallOptions options;
  Predicate keep;
  std::function<void(std::exception_ptr, std::optional<V>, bool own_turn)> done;
  std::optional<V> value;
  const std::stop_token caller_stop;  // options.stop as given (a launch arms its own)
  std::atomic<bool> launched{false};

  /// The call a launch starts: `self` the first time; a fresh copy each
  /// time after (an asio deferred operation may be launched again), or a
  /// std::logic_error if its creator cannot be copied.
  static std::shared_ptr<GetOrCreateCall> launch(std::shared_ptr<GetOrCreateCall> self) {
    if (!self->launched.exchange(true)) return self;
    if constexpr (std::is_copy_constructible_v<Creator> &&
                  std::is_copy_constructible_v<Predicate>) {
      CallOptions given = self->options;
      given.stop = self->caller_stop;
      auto again =
          std::make_shared<GetOrCreateCall>(self->key, self->creator, std::move(given), self->keep);
      again->launched = true;
      return again;
    } else {
      throw std::logic_error(
          "dogpile: an asynchronous call whose creator cannot be copied is launched once");
    }
  }

  void made(V& v, CreateOut& out) {
    out.keep = static_cast<bool>(std::invoke(keep, std::as_const(v)));
    Codec<V>::encode(v, *out.bytes);
    value = std::move(v);
  }

  // What the engine calls (through FunctionRef::to: no callable objects).
  bool decode(std::size_t, std::string_view bytes) {
    value = Codec<V>::decode(bytes);
    return value.has_value();
  }
  void create(std::span<const std::size_t>, std::span<CreateOut> out) {
    if constexpr (kMaking == Making::now) {
      V v = std::invoke(creator);
      made(v, out[0]);
    } else {
      throw std::logic_error("dogpile: a coroutine creator in a blocking call");
    }
  }
  void start_creation(std::span<const std::size_t>, std::span<CreateOut> out, CreatedFn done) {
    if constexpr (kMaking == Making::later) {
      CreateOut* slot = out.data();
      std::invoke(creator, [this, slot, done = std::move(done)](std::exception_ptr error,
                                                                std::optional<V> v) mutable {
        if (!error && !v) error = std::make_exception_ptr(std::logic_error("no value"));
        if (!error) {
          try {
            made(*v, *slot);
          } catch (...) {
            error = std::current_exception();
          }
        }
        done(error);
      });
    }
  }
  std::shared_ptr<const void> hold() {
    if constexpr (std::is_copy_constructible_v<V>) {
      return value ? std::make_shared<const V>(*value) : nullptr;
    } else {
      return nullptr;
    }
  }
  void take(const void* held) {
    if constexpr (std::is_copy_constructible_v<V>) value.emplace(*static_cast<const V*>(held));
  }

  std::string_view keys[1] = {key};
  StartCreate start = StartCreate::to<&State::start_creation>(*this);
  Typed typed{&type_tag<V>, FunctionRef<std::shared_ptr<const void>()>::to<&State::hold>(*this),
              FunctionRef<void(const void*)>::to<&State::take>(*this), sizeof(V)};
  Call call{std::span<const std::string_view>(keys),
            DecodeAt::to<&State::decode>(*this),
            CreateAt::to<&State::create>(*this),
            options,
            nullptr,
            std::is_copy_constructible_v<V> ? &typed : nullptr,
            kMaking == Making::later ? &start : nullptr};
};

template <class V, Making kMaking, class Creator, class Predicate>
std::shared_ptr<GetOrCreateCall<V, kMaking, Creator, Predicate>> make_get_or_create(
    std::string_view key, Creator creator, CallOptions options, Predicate keep) {
  require_codable<V>();
  return std::make_shared<GetOrCreateCall<V, kMaking, Creator, Predicate>>(
      key, std::move(creator), std::move(options), std::move(keep));
}

/// Starts `state` (made by make_get_or_create, its `done` set) on `loop`.
template <class V, Making kMaking, class Creator, class Predicate>
void start_get_or_create(CacheRegion& region, Loop& loop,
                         std::shared_ptr<GetOrCreateCall<V, kMaking, Creator, Predicate>> state) {
  // Owned by the engine's completion (freed once it has run, or if the call
  // could not start).
  auto& call = *state;
  region.start_call(call.call, loop,
                    [state](std::exception_ptr error, Outcome outcome, bool own_turn) {
                      // Let go of the completion as it runs (what it holds, an asio call
                      // its executor's work, must not outlive it with the state).
                      const auto done = std::move(state->done);
                      if (error || !state->value) {
                        done(error ? error : std::make_exception_ptr(std::logic_error("no value")),
                             std::optional<V>(), own_turn);
                        return;
                      }
                      if (state->options.outcome != nullptr) *state->options.outcome = outcome;
                      done(nullptr, std::move(state->value), own_turn);
                    });
}

/// make_get_or_create and start_get_or_create in one.
template <class V, Making kMaking, class Creator, class Predicate, class Done>
void start_get_or_create(CacheRegion& region, Loop& loop, std::string_view key, Creator creator,
                         CallOptions options, Predicate keep, Done done) {
  auto state =
      make_get_or_create<V, kMaking>(key, std::move(creator), std::move(options), std::move(keep));
  state->done = [done = std::move(done)](std::exception_ptr error, std::optional<V> value,
                                         bool) mutable {
    done(std::move(error), std::move(value));
  };
  start_get_or_create(region, loop, std::move(state));
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
  region.start_call(call.call, loop, [state](std::exception_ptr error, Outcome outcome, bool) {
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
