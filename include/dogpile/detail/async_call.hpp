// SPDX-License-Identifier: MIT
// dogpile/detail/async_call.hpp — one asynchronous get_or_create, whatever
// the event loop: the call and all it refers to, on the heap until the
// engine is done with it (docs/async.md). The asio binding wraps this in a
// completion token; tests drive it on their own loop. Not for direct use.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "dogpile/detail/loop.hpp"
#include "dogpile/region.hpp"

namespace dogpile::detail {

/// Starts region.get_or_create(key, creator, options) on `loop`; `done`
/// receives (nullptr, value) or (exception, nullopt), once. `creator` runs
/// where the loop runs creators; V is what it returns.
template <class V, class Creator, class Done>
void start_get_or_create(CacheRegion& region, Loop& loop, std::string_view key, Creator creator,
                         CallOptions options, Done done) {
  struct State {
    State(std::string_view k, Creator c, CallOptions o, Done d)
        : key(k), creator(std::move(c)), options(std::move(o)), done(std::move(d)) {}
    State(const State&) = delete;
    State& operator=(const State&) = delete;

    std::string key;
    Creator creator;
    CallOptions options;
    Done done;
    std::optional<V> value;

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
        V made = std::invoke(s->creator);
        out[0].keep = true;
        Codec<V>::encode(made, *out[0].bytes);
        s->value = std::move(made);
      }
    } create_fn{this};
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
    Typed typed{&type_tag<V>, FunctionRef<std::shared_ptr<const void>()>(hold_fn),
                FunctionRef<void(const void*)>(take_fn), sizeof(V)};
    Call call{std::span<const std::string_view>(keys),           decode, create, options, nullptr,
              std::is_copy_constructible_v<V> ? &typed : nullptr};
  };
  require_codable<V>();
  // Owned by the engine's completion (freed once it has run, or if the call
  // could not start).
  auto state =
      std::make_shared<State>(key, std::move(creator), std::move(options), std::move(done));
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

}  // namespace dogpile::detail
