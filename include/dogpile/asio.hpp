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
// continuation or a timer on that executor. A creator that is a plain
// function runs on AsyncOptions::creators (by default dogpile's pool of 4
// threads), never on the I/O thread unless you name it; a creator that
// returns an asio::awaitable<V> is spawned on the caller's executor.
// On an io_context, MemcachedMetaBackend's reads of one key are made by the
// I/O thread on a connection of its own (pipelined, matched by opaque; see
// docs/async.md). Other requests of a backend that may block run on
// AsyncOptions::requests (a pool of 4 by default), the call resuming on its
// executor; the in-process MemoryBackend's run in place.
//
// Also: async_get_or_create_multi (a creator of the missing keys, plain or
// a coroutine co_returning a std::vector), async_get, async_set,
// async_remove, and Cached / CachedMulti::async_call (dogpile/cached.hpp).
//
// Cancellation: the per-operation cancellation slot (asio's
// bind_cancellation_slot, awaitable operators, a timeout) and
// CallOptions::stop end a wait as its deadline does: the call completes
// with WaitTimeout (reason cancelled), its lease given back. A creator
// already running is not interrupted; its value is still stored. A get,
// set or remove cancelled before its request starts completes with
// std::errc::operation_canceled and makes no request; one already made
// completes as made (its time is bounded by the backend's timeouts).
//
// Lifetimes: the region, and the executor's context, must outlive the calls
// started on them: run the io_context until its calls have completed
// before stopping or destroying it (a call whose resumption is dropped
// unrun leaks its frame, and its key's flight stays led until
// max_creation). CallOptions::background is not taken: a stale value's
// winner creates within the call (docs/async.md).
//
// Types: AsyncOptions; CacheRegion::async_* (declared in dogpile/region.hpp,
// defined here).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#if defined(DOGPILE_BOOST_ASIO)
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
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
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/dispatch.hpp>
#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
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

class AsioWatch;

// The watches made on one execution context: retired (their descriptor and
// timer let go) when it shuts down, before the services they use go.
class WatchRegistry final : public net::execution_context::service {
 public:
  using key_type = WatchRegistry;
  static inline net::execution_context::id id;  // NOLINT: asio's service id
  explicit WatchRegistry(net::execution_context& context) : service(context) {}
  void add(AsioWatch* watch) {
    std::lock_guard lock(mutex_);
    watches_.push_back(watch);
  }
  void remove(AsioWatch* watch) {
    std::lock_guard lock(mutex_);
    watches_.erase(std::remove(watches_.begin(), watches_.end(), watch), watches_.end());
  }

 private:
  void shutdown() override;
  std::mutex mutex_;  // held while watches are retired: none goes meanwhile
  std::vector<AsioWatch*> watches_;
};

// A transport's socket watched on an I/O executor (detail::Watch). It keeps
// no work on the executor by itself: only its waits, while armed, do.
class AsioWatch final : public Watch {
 public:
  AsioWatch(const net::any_io_executor& io, int fd)
      : io_(net::prefer(io, net::execution::outstanding_work.untracked)) {
    timer_.emplace(io_);
    descriptor_.emplace(io_, fd);  // from here on it holds the socket
    try {
      // Made after the descriptor's service: shut down before it.
      auto& registry = net::use_service<WatchRegistry>(net::query(io_, net::execution::context));
      registry.add(this);
      registry_.store(&registry, std::memory_order_release);
    } catch (...) {
      (void)descriptor_->release();  // the socket stays the transport's
      throw;
    }
  }
  ~AsioWatch() override {
    // Unregistered first (a shutdown retiring watches holds the registry).
    if (WatchRegistry* registry = registry_.load(std::memory_order_acquire)) {
      registry->remove(this);
    }
    std::lock_guard lock(mutex_);
    let_go_locked();
  }
  AsioWatch(const AsioWatch&) = delete;
  AsioWatch& operator=(const AsioWatch&) = delete;

  void wait(bool write, std::function<void(bool)> fn) override {
    std::lock_guard lock(mutex_);
    if (!descriptor_) {
      net::post(io_, [fn = std::move(fn)] { fn(false); });  // retired: the wait ends
      return;
    }
    descriptor_->async_wait(write ? net::posix::stream_descriptor::wait_write
                                  : net::posix::stream_descriptor::wait_read,
                            [fn = std::move(fn)](const std::error_code& error) { fn(!error); });
  }
  void after(Duration delay, std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    if (!timer_) return;
    timer_->expires_after(std::chrono::duration_cast<net::steady_timer::duration>(delay));
    timer_->async_wait([fn = std::move(fn)](const std::error_code& error) {
      if (!error) fn();
    });
  }
  void stop_timer() override {
    std::lock_guard lock(mutex_);
    if (timer_) timer_->cancel();
  }
  void cancel() override {
    std::lock_guard lock(mutex_);
    if (descriptor_) descriptor_->cancel();
    if (timer_) timer_->cancel();
  }
  void post(std::function<void()> fn) override {
    if (alive()) net::post(io_, std::move(fn));
  }
  [[nodiscard]] bool alive() const override { return !retired_.load(std::memory_order_acquire); }

  // The context is shutting down (called with the registry held).
  void retire() {
    std::lock_guard lock(mutex_);
    retired_.store(true, std::memory_order_release);
    registry_.store(nullptr, std::memory_order_release);
    let_go_locked();
  }

 private:
  void let_go_locked() {
    if (descriptor_) {
      (void)descriptor_->release();  // the socket is the transport's to close
      descriptor_.reset();
    }
    timer_.reset();
  }

  net::any_io_executor io_;
  std::mutex mutex_;
  std::optional<net::posix::stream_descriptor> descriptor_;
  std::optional<net::steady_timer> timer_;
  std::atomic<WatchRegistry*> registry_{nullptr};
  std::atomic<bool> retired_{false};
};

inline void WatchRegistry::shutdown() {
  std::lock_guard lock(mutex_);
  for (AsioWatch* watch : watches_) watch->retire();
  watches_.clear();
}

// A call's loop on asio: its I/O executor (kept busy while the call runs),
// the pools (dogpile's own unless AsyncOptions names others; each started
// only once a call needs it), timers on the executor.
class AsioLoop final : public Loop {
 public:
  AsioLoop(net::any_io_executor io, bool in_place)
      : io_(net::prefer(std::move(io), net::execution::outstanding_work.tracked)),
        in_place_(in_place) {}

  void post(std::function<void()> fn) override { net::post(io_, std::move(fn)); }
  std::function<void()> post_at(SteadyTime, Duration delay, std::function<void()> fn) override {
    // Neither the timer nor its canceller keeps the context busy once the
    // wait is over (the wait itself does): an untracked executor.
    auto io = net::prefer(io_, net::execution::outstanding_work.untracked);
    auto timer = std::make_shared<net::steady_timer>(
        io, std::chrono::duration_cast<net::steady_timer::duration>(delay));
    timer->async_wait([timer, fn = std::move(fn)](const auto& error) {
      if (!error) fn();
    });
    return [timer, io] { net::post(io, [timer] { timer->cancel(); }); };
  }
  void run_blocking(std::function<void()> fn) override {
    post_on(default_async_options().requests, default_async_pool, std::move(fn));
  }
  void run_creator(std::function<void()> fn) override {
    post_on(default_async_options().creators, default_creator_pool, std::move(fn));
  }
  [[nodiscard]] bool requests_in_place() const override { return in_place_; }
  // Sockets are watched on the caller's I/O context only (not on the
  // system executor a future's call runs on).
  // (The system executor is told by its type: asking for its context would
  // start asio's system threads.)
  [[nodiscard]] const void* context() const override {
    if (io_.target_type() == typeid(net::system_executor)) return nullptr;
    return &net::query(io_, net::execution::context);
  }
  [[nodiscard]] std::unique_ptr<Watch> watch(int fd) override {
    if (context() == nullptr) return nullptr;
    return std::make_unique<AsioWatch>(io_, fd);
  }

  // An io_context's own executor runs what is posted on the context's
  // threads, in no order to keep: calls on it share their wakes. Any other
  // (a strand, say) keeps its own.
  [[nodiscard]] const void* runs_on() const override {
    using Tracked = decltype(net::prefer(std::declval<net::io_context::executor_type>(),
                                         net::execution::outstanding_work.tracked));
    // (any_io_executor::target does not check the type: target_type does.)
    if (io_.target_type() == typeid(Tracked)) return &net::query(io_, net::execution::context);
    return this;
  }

  [[nodiscard]] const net::any_io_executor& io() const noexcept { return io_; }

 private:
  // On the executor named, else on dogpile's pool (started by its first use).
  static void post_on(const std::optional<net::any_io_executor>& named, net::thread_pool& (*pool)(),
                      std::function<void()> fn) {
    if (named) {
      net::post(*named, std::move(fn));
    } else {
      net::post(pool(), std::move(fn));
    }
  }

  net::any_io_executor io_;
  bool in_place_;
};

}  // namespace detail

namespace detail {

// A creator's result, when it is a coroutine (an asio::awaitable<V>).
template <class R>
struct awaitable_of {
  static constexpr bool value = false;
  using type = R;
};
template <class V, class E>
struct awaitable_of<net::awaitable<V, E>> {
  static constexpr bool value = true;
  using type = V;
};
template <class R>
inline constexpr bool is_awaitable_v = awaitable_of<std::remove_cvref_t<R>>::value;

// What an asynchronous get_or_create completes with: T if given, else what
// the creator returns (or its coroutine's value).
template <class T, class Creator>
using async_value_t = std::conditional_t<
    std::is_same_v<T, Deduced>,
    typename awaitable_of<std::remove_cvref_t<std::invoke_result_t<Creator&>>>::type, T>;

// One asynchronous call on asio: its loop, its handler, the stop source
// that asio's cancellation and the caller's stop token both trip.
template <class Handler>
struct AsioCall {
  AsioCall(CacheRegion& region, Handler h)
      : loop(io_executor_of(h), dynamic_cast<const MemoryBackend*>(&region.backend()) != nullptr),
        handler(std::move(h)) {}

  AsioLoop loop;
  Handler handler;
  std::stop_source cancel;
  struct Trip {
    std::stop_source source;
    void operator()() const { (void)source.request_stop(); }
  };
  std::optional<std::stop_callback<Trip>> caller_stop;

  // The call's stop token: trips on `caller` and on the handler's
  // per-operation cancellation.
  std::stop_token arm(const std::stop_token& caller) {
    if (caller.stop_possible()) {
      caller_stop.emplace(caller, Trip{cancel});
    }
    auto slot = net::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) {
      slot.assign([s = cancel](net::cancellation_type) { (void)s.request_stop(); });
    }
    return cancel.get_token();
  }

  // Completes the call on its executor: posted, never within the initiating
  // call nor the engine's (a handler that throws does so out of run());
  // dispatched (in place, if already on its executor) from a turn of the
  // loop of the call's own (`own_turn`, start_call).
  template <class... Args>
  static void complete(const std::shared_ptr<AsioCall>& op, bool own_turn, Args&&... args) {
    auto finish = [op, ... args = std::forward<Args>(args)]() mutable {
      auto slot = net::get_associated_cancellation_slot(op->handler);
      if (slot.is_connected()) slot.clear();
      auto handler = std::move(op->handler);
      std::move(handler)(std::move(args)...);
    };
    if (own_turn) {
      net::dispatch(op->loop.io(), std::move(finish));
    } else {
      net::post(op->loop.io(), std::move(finish));
    }
  }

  // Runs `fn` (backend requests, no waits) where the backend's requests run
  // (in place, or on the request pool) and completes with (exception, R).
  // A call cancelled before its request starts completes with
  // operation_aborted, and makes no request.
  template <class R, class Fn>
  static void request(const std::shared_ptr<AsioCall>& op, Fn fn) {
    auto work = [op, fn = std::move(fn)]() mutable {
      if (op->cancel.stop_requested()) {
        complete(op, false,
                 std::make_exception_ptr(std::system_error(
                     std::make_error_code(std::errc::operation_canceled), "dogpile: cancelled")),
                 R{});
        return;
      }
      try {
        R result = fn();
        complete(op, false, std::exception_ptr(), std::move(result));
      } catch (...) {
        complete(op, false, std::current_exception(), R{});
      }
    };
    if (op->loop.requests_in_place()) {
      net::post(op->loop.io(), std::move(work));
    } else {
      op->loop.run_blocking(std::move(work));
    }
  }
};

// A coroutine creator as the engine starts it: spawned on the call's
// executor, its value (or exception) handed to `made` there.
template <class V, class Creator>
struct SpawnCreator {
  net::any_io_executor io;
  Creator creator;
  template <class Made>
  void operator()(Made made) {
    net::co_spawn(io, std::invoke(creator),
                  [made = std::move(made)](std::exception_ptr error, V value) mutable {
                    if (error) {
                      made(std::move(error), std::optional<V>());
                    } else {
                      made(nullptr, std::optional<V>(std::move(value)));
                    }
                  });
  }
};
template <class V, class Creator>
struct SpawnMultiCreator {
  net::any_io_executor io;
  Creator creator;
  template <class Made>
  void operator()(std::span<const std::string_view> missing, Made made) {
    // The coroutine runs after this returns: it gets keys of its own.
    auto keys = std::make_shared<std::vector<std::string_view>>(missing.begin(), missing.end());
    net::co_spawn(
        io, std::invoke(creator, std::span<const std::string_view>(*keys)),
        [keys, made = std::move(made)](std::exception_ptr error, std::vector<V> values) mutable {
          if (error) {
            made(std::move(error), std::optional<std::vector<V>>());
          } else {
            made(nullptr, std::optional<std::vector<V>>(std::move(values)));
          }
        });
  }
};

}  // namespace detail

template <class T, class Creator, class ShouldCache, class CompletionToken>
auto CacheRegion::async_get_or_create(std::string_view key, Creator creator, CallOptions options,
                                      ShouldCache should_cache, CompletionToken&& token) {
  using V = detail::async_value_t<T, Creator>;
  static_assert(std::default_initializable<V>,
                "async_get_or_create completes with (std::exception_ptr, V): V must be "
                "default-constructible (it is V{} when the call fails)");
  detail::require_codable<V>();
  // The call is made here: the initiation (kept in a coroutine's frame by
  // use_awaitable while the call waits) carries only its pointer.
  constexpr bool kLater = detail::is_awaitable_v<std::invoke_result_t<Creator&>>;
  auto state = [&] {
    if constexpr (kLater) {
      return detail::make_get_or_create<V, detail::Making::later>(
          key, detail::SpawnCreator<V, Creator>{{}, std::move(creator)}, std::move(options),
          std::move(should_cache));
    } else {
      return detail::make_get_or_create<V, detail::Making::now>(
          key, std::move(creator), std::move(options), std::move(should_cache));
    }
  }();
  auto initiation = [this](auto handler, auto made) {
    using Op = detail::AsioCall<decltype(handler)>;
    auto state = std::remove_cvref_t<decltype(*made)>::launch(std::move(made));
    auto op = std::make_shared<Op>(*this, std::move(handler));
    state->options.stop = op->arm(state->caller_stop);
    if constexpr (kLater) state->creator.io = op->loop.io();
    state->done = [op](std::exception_ptr error, std::optional<V> value, bool own_turn) {
      Op::complete(op, own_turn, std::move(error), value ? std::move(*value) : V{});
    };
    detail::start_get_or_create(*this, op->loop, std::move(state));
  };
  return net::async_initiate<CompletionToken, void(std::exception_ptr, V)>(std::move(initiation),
                                                                           token, std::move(state));
}

template <class T, class Creator, class CompletionToken>
auto CacheRegion::async_get_or_create(std::string_view key, Creator creator, CallOptions options,
                                      CompletionToken&& token) {
  return async_get_or_create<T>(key, std::move(creator), std::move(options), detail::AlwaysCache{},
                                std::forward<CompletionToken>(token));
}

template <class T, class Creator, class CompletionToken>
auto CacheRegion::async_get_or_create(std::string_view key, Creator creator,
                                      CompletionToken&& token) {
  return async_get_or_create<T>(key, std::move(creator), CallOptions{},
                                std::forward<CompletionToken>(token));
}

template <detail::key_range Keys, class Creator, class CompletionToken>
auto CacheRegion::async_get_or_create_multi(const Keys& keys, Creator creator, CallOptions options,
                                            CompletionToken&& token) {
  using R = std::remove_cvref_t<std::invoke_result_t<Creator&, std::span<const std::string_view>>>;
  using Result = typename detail::awaitable_of<R>::type;
  static_assert(
      std::ranges::sized_range<Result> && !std::is_convertible_v<const Result&, std::string_view>,
      "dogpile: async_get_or_create_multi's creator must return (or co_return) a sized range "
      "of values (e.g. std::vector<T>), one per key it was given, in order");
  using V = std::remove_cvref_t<std::ranges::range_value_t<Result>>;
  detail::require_codable<V>();
  std::vector<std::string> owned;
  if constexpr (std::ranges::sized_range<Keys>) owned.reserve(std::ranges::size(keys));
  for (auto&& k : keys) owned.emplace_back(std::string_view(k));
  auto initiation = [this](auto handler, std::vector<std::string> keys, Creator creator,
                           CallOptions options) {
    using Op = detail::AsioCall<decltype(handler)>;
    auto op = std::make_shared<Op>(*this, std::move(handler));
    options.stop = op->arm(options.stop);
    // Background regeneration is not taken by asynchronous calls.
    options.background = false;
    auto done = [op](std::exception_ptr error, std::optional<std::vector<V>> values) {
      Op::complete(op, false, std::move(error), values ? std::move(*values) : std::vector<V>{});
    };
    if constexpr (detail::is_awaitable_v<R>) {
      static_assert(std::is_same_v<Result, std::vector<V>>,
                    "dogpile: a coroutine creator of async_get_or_create_multi co_returns a "
                    "std::vector of the values");
      detail::start_get_or_create_multi<V, detail::Making::later>(
          *this, op->loop, std::move(keys),
          detail::SpawnMultiCreator<V, Creator>{op->loop.io(), std::move(creator)},
          std::move(options), std::move(done));
    } else {
      detail::start_get_or_create_multi<V, detail::Making::now>(
          *this, op->loop, std::move(keys), std::move(creator), std::move(options),
          std::move(done));
    }
  };
  return net::async_initiate<CompletionToken, void(std::exception_ptr, std::vector<V>)>(
      std::move(initiation), token, std::move(owned), std::move(creator), std::move(options));
}

template <detail::key_range Keys, class Creator, class CompletionToken>
auto CacheRegion::async_get_or_create_multi(const Keys& keys, Creator creator,
                                            CompletionToken&& token) {
  return async_get_or_create_multi(keys, std::move(creator), CallOptions{},
                                   std::forward<CompletionToken>(token));
}

template <class T, class CompletionToken>
auto CacheRegion::async_get(std::string_view key, CompletionToken&& token) {
  detail::require_codable<T>();
  auto initiation = [this](auto handler, std::string key) {
    using Op = detail::AsioCall<decltype(handler)>;
    auto op = std::make_shared<Op>(*this, std::move(handler));
    (void)op->arm({});
    Op::template request<std::optional<T>>(op,
                                           [this, key = std::move(key)] { return get<T>(key); });
  };
  return net::async_initiate<CompletionToken, void(std::exception_ptr, std::optional<T>)>(
      std::move(initiation), token, std::string(key));
}

template <class T, class CompletionToken>
auto CacheRegion::async_set(std::string_view key, const T& value, CompletionToken&& token) {
  detail::require_codable<T>();
  std::string bytes;  // encoded here: the value need not outlive this call
  Codec<T>::encode(value, bytes);
  auto initiation = [this](auto handler, std::string key, std::string bytes) {
    using Op = detail::AsioCall<decltype(handler)>;
    auto op = std::make_shared<Op>(*this, std::move(handler));
    (void)op->arm({});
    Op::template request<bool>(op, [this, key = std::move(key), bytes = std::move(bytes)] {
      return set_bytes(key, [&](std::string& out) { out.append(bytes); });
    });
  };
  return net::async_initiate<CompletionToken, void(std::exception_ptr, bool)>(
      std::move(initiation), token, std::string(key), std::move(bytes));
}

template <class CompletionToken>
auto CacheRegion::async_remove(std::string_view key, CompletionToken&& token) {
  auto initiation = [this](auto handler, std::string key) {
    using Op = detail::AsioCall<decltype(handler)>;
    auto op = std::make_shared<Op>(*this, std::move(handler));
    (void)op->arm({});
    Op::template request<bool>(op, [this, key = std::move(key)] { return remove(key); });
  };
  return net::async_initiate<CompletionToken, void(std::exception_ptr, bool)>(
      std::move(initiation), token, std::string(key));
}

}  // namespace dogpile
