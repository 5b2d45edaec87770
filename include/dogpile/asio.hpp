// SPDX-License-Identifier: MIT
// dogpile/asio.hpp — get_or_create without blocking a thread, for services
// built on asio (standalone asio 1.22, Debian libasio-dev; define
// DOGPILE_BOOST_ASIO before including it to use Boost.Asio instead).
//
//   asio::awaitable<void> handle(dogpile::CacheRegion& users, int id) {
//     std::string profile = co_await users.async_get_or_create(
//         "user:" + std::to_string(id), [id] { return load_profile(id); },
//         asio::use_awaitable);
//   }
//
// Any completion token works: a callback (std::exception_ptr, V), use_future,
// use_awaitable. The call runs the same step as get_or_create (docs/async.md)
// on the handler's associated executor (the coroutine's, for
// use_awaitable; else the system executor): a caller waiting for another's
// creation, in this process or another, holds no thread — it is a flight
// continuation or a timer on that executor. The creator, a plain function,
// runs on AsyncOptions::creators (by default dogpile's pool of 4 threads),
// never on the I/O thread unless you name it. Requests of a backend that
// may block (both memcached transports, for now) run on
// AsyncOptions::requests (the same pool by default), the call resuming on
// its executor; the in-process MemoryBackend's run in place.
//
// Cancellation: the per-operation cancellation slot (asio's
// bind_cancellation_slot, awaitable operators, a timeout) and
// CallOptions::stop end a wait as its deadline does: the call completes
// with WaitTimeout (reason cancelled), its lease given back. A creator
// already running is not interrupted; its value is still stored.
//
// Lifetimes: the region, and the executor's context, must outlive the calls
// started on them: run the io_context until its calls have completed
// before stopping or destroying it (a call whose resumption is dropped
// unrun leaks its frame, and its key's flight stays led until
// max_creation). CallOptions::background is not taken yet: a stale value's
// winner creates within the call (docs/async.md).
//
// Types: AsyncOptions; CacheRegion::async_get_or_create (declared in
// dogpile/region.hpp, defined here).
#pragma once

#include <chrono>
#include <concepts>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#if defined(DOGPILE_BOOST_ASIO)
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/thread_pool.hpp>
namespace dogpile::net {
using namespace ::boost::asio;  // NOLINT: the binding's one spelling of either asio
}
#else
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_executor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/system_executor.hpp>
#include <asio/thread_pool.hpp>
namespace dogpile::net {
using namespace ::asio;  // NOLINT: the binding's one spelling of either asio
}
#endif

#include "dogpile/detail/async_call.hpp"
#include "dogpile/detail/loop.hpp"
#include "dogpile/memory.hpp"
#include "dogpile/region.hpp"

namespace dogpile {

/// Where an asynchronous call runs what must not run on its I/O thread.
struct AsyncOptions {
  /// Plain creators. Default: dogpile's creator pool (default_creator_pool()).
  std::optional<net::any_io_executor> creators;
  /// Requests of a backend that may block. Default: dogpile's request pool
  /// (default_async_pool()).
  std::optional<net::any_io_executor> requests;
};

/// dogpile's pool for the requests of a blocking backend: 4 threads,
/// started at first use, joined at exit.
inline net::thread_pool& default_async_pool() {
  static net::thread_pool pool(4);
  return pool;
}

/// dogpile's pool for creators, apart from the requests' (a creator that
/// waits on another call's store cannot hold up that store): 4 threads.
inline net::thread_pool& default_creator_pool() {
  static net::thread_pool pool(4);
  return pool;
}

/// The options every async_get_or_create uses unless given its own. Set it
/// before the first asynchronous call (not synchronized).
inline AsyncOptions& default_async_options() {
  static AsyncOptions options;
  return options;
}

namespace detail {

// The executor a call runs on: the handler's, if it is an I/O executor (a
// coroutine's, a bound io_context's); else (a future's) the system executor.
template <class Handler>
net::any_io_executor io_executor_of(const Handler& handler) {
  auto executor = net::get_associated_executor(handler, net::system_executor());
  if constexpr (std::is_convertible_v<decltype(executor), net::any_io_executor>) {
    return executor;
  } else {
    return net::system_executor();
  }
}

// A call's loop on asio: its I/O executor (kept busy while the call runs),
// the pools, timers on the executor.
class AsioLoop final : public Loop {
 public:
  AsioLoop(net::any_io_executor io, net::any_io_executor requests, net::any_io_executor creators,
           bool in_place)
      : io_(net::prefer(std::move(io), net::execution::outstanding_work.tracked)),
        requests_(std::move(requests)),
        creators_(std::move(creators)),
        in_place_(in_place) {}

  void post(std::function<void()> fn) override { net::post(io_, std::move(fn)); }
  std::function<void()> post_at(SteadyTime, Duration delay, std::function<void()> fn) override {
    // The canceller must not keep the context busy: an untracked executor.
    auto io = net::prefer(io_, net::execution::outstanding_work.untracked);
    auto timer = std::make_shared<net::steady_timer>(
        io_, std::chrono::duration_cast<net::steady_timer::duration>(delay));
    timer->async_wait([timer, fn = std::move(fn)](const auto& error) {
      if (!error) fn();
    });
    return [timer, io] { net::post(io, [timer] { timer->cancel(); }); };
  }
  void run_blocking(std::function<void()> fn) override { net::post(requests_, std::move(fn)); }
  void run_creator(std::function<void()> fn) override { net::post(creators_, std::move(fn)); }
  [[nodiscard]] bool requests_in_place() const override { return in_place_; }

  [[nodiscard]] const net::any_io_executor& io() const noexcept { return io_; }

 private:
  net::any_io_executor io_;
  net::any_io_executor requests_;
  net::any_io_executor creators_;
  bool in_place_;
};

}  // namespace detail

template <class T, class Creator, class CompletionToken>
auto CacheRegion::async_get_or_create(std::string_view key, Creator creator, CallOptions options,
                                      CompletionToken&& token) {
  using V = detail::created_value_t<T, Creator>;
  static_assert(std::default_initializable<V>,
                "async_get_or_create completes with (std::exception_ptr, V): V must be "
                "default-constructible (it is V{} when the call fails)");
  detail::require_codable<V>();
  auto initiation = [this](auto handler, std::string key, Creator creator, CallOptions options) {
    using Handler = decltype(handler);
    const AsyncOptions& defaults = default_async_options();
    auto pool = default_async_pool().get_executor();
    struct Op {
      Op(net::any_io_executor io, net::any_io_executor requests, net::any_io_executor creators,
         bool in_place, Handler h)
          : loop(std::move(io), std::move(requests), std::move(creators), in_place),
            handler(std::move(h)) {}
      detail::AsioLoop loop;
      Handler handler;
      std::stop_source cancel;  // asio's cancellation, and the caller's stop
      std::optional<std::stop_callback<std::function<void()>>> caller_stop;
    };
    auto op = std::make_shared<Op>(
        detail::io_executor_of(handler), defaults.requests.value_or(pool),
        defaults.creators.value_or(net::any_io_executor(default_creator_pool().get_executor())),
        dynamic_cast<const MemoryBackend*>(&backend()) != nullptr, std::move(handler));
    if (options.stop.stop_possible()) {
      op->caller_stop.emplace(options.stop, [s = op->cancel] { (void)s.request_stop(); });
    }
    auto slot = net::get_associated_cancellation_slot(op->handler);
    if (slot.is_connected()) {
      slot.assign([s = op->cancel](net::cancellation_type) { (void)s.request_stop(); });
    }
    options.stop = op->cancel.get_token();
    detail::start_get_or_create<V>(
        *this, op->loop, key, std::move(creator), std::move(options),
        [op](std::exception_ptr error, std::optional<V> value) {
          auto complete = [op, error, value = std::move(value)]() mutable {
            auto done_slot = net::get_associated_cancellation_slot(op->handler);
            if (done_slot.is_connected()) done_slot.clear();
            auto handler = std::move(op->handler);
            std::move(handler)(error, value ? std::move(*value) : V{});
          };
          // Posted: never within the initiating call, nor within the
          // engine's (a handler that throws does so out of run()).
          net::post(op->loop.io(), std::move(complete));
        });
  };
  return net::async_initiate<CompletionToken, void(std::exception_ptr, V)>(
      std::move(initiation), token, std::string(key), std::move(creator), std::move(options));
}

template <class T, class Creator, class CompletionToken>
auto CacheRegion::async_get_or_create(std::string_view key, Creator creator,
                                      CompletionToken&& token) {
  return async_get_or_create<T>(key, std::move(creator), CallOptions{},
                                std::forward<CompletionToken>(token));
}

}  // namespace dogpile
