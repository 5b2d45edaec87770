// SPDX-License-Identifier: MIT
// A call's driver (internal): how the step passes the four points where a
// call waits (docs/async.md). The step awaits each point on its driver:
//
//   co_await io.request(op)                 op: backend work, no waits
//   co_await io.sleep_until(t, stop)        -> false if stopped first
//   co_await io.follow(flight, limit, stop) -> the flight's result, or nullopt
//   co_await io.create(op)                  op: the creator and its bookkeeping
//
// A synchronous driver passes each in place: the awaitable is ready at once
// and the coroutine never suspends (Task::run_here runs it). An asynchronous
// driver suspends the coroutine and resumes it when the point is passed
// (start_* below), on the call's executor.
#pragma once

#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>

#include "dogpile/clock.hpp"
#include "dogpile/detail/function_ref.hpp"
#include "engine/flight.hpp"

namespace dogpile::detail {
class Loop;  // dogpile/detail/loop.hpp
}  // namespace dogpile::detail

namespace dogpile::detail {

class Io {
 public:
  using Op = FunctionRef<void()>;

  virtual ~Io() = default;
  Io(const Io&) = delete;
  Io& operator=(const Io&) = delete;

  [[nodiscard]] bool synchronous() const noexcept { return synchronous_; }
  [[nodiscard]] const Clock& clock() const noexcept { return clock_; }

  struct Request {
    Io& io;
    Op op;
    bool creator = false;
    std::exception_ptr error{};
    [[nodiscard]] bool await_ready() {
      if (!io.synchronous_) return false;
      op();  // what it throws, the awaiting coroutine receives
      return true;
    }
    bool await_suspend(std::coroutine_handle<> resume) {
      return io.start_request(op, creator, error, resume);
    }
    void await_resume() const {
      if (error) std::rethrow_exception(error);
    }
  };
  /// Backend work (one or more requests, no waits).
  Request request(Op op) noexcept { return Request{*this, op}; }
  /// The creator, with what surrounds it.
  Request create(Op op) noexcept { return Request{*this, op, true}; }

  /// Work that completes later (a coroutine creator, a read on the loop's
  /// own connection): `start(done)` begins it and returns true, and `done`
  /// (nullptr or what it threw) ends it, once, from any thread; or it
  /// returns false, not begun (`done` never runs), and the coroutine goes
  /// on at once. Asynchronous drivers only.
  using StartOp = FunctionRef<bool(std::function<void(std::exception_ptr)>)>;
  struct Later {
    Io& io;
    StartOp start;
    std::exception_ptr error{};
    [[nodiscard]] static bool await_ready() noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> resume) {
      return io.start_later(start, error, resume);
    }
    void await_resume() const {
      if (error) std::rethrow_exception(error);
    }
  };
  Later later(StartOp start) noexcept { return Later{*this, start}; }
  /// The event loop an asynchronous driver passes its points on (null for
  /// the synchronous one).
  [[nodiscard]] virtual Loop* loop() noexcept { return nullptr; }

  struct Sleep {
    Io& io;
    SteadyTime until;
    std::stop_token stop;
    bool woke = false;
    [[nodiscard]] bool await_ready() {
      if (!io.synchronous_) return false;
      woke = io.clock_.sleep_until(until, stop);
      return true;
    }
    bool await_suspend(std::coroutine_handle<> resume) {
      return io.start_sleep(until, stop, woke, resume);
    }
    [[nodiscard]] bool await_resume() const noexcept { return woke; }
  };
  /// Until the clock reads `until`: true, or false if `stop` came first.
  Sleep sleep_until(SteadyTime until, std::stop_token stop) noexcept {
    return Sleep{*this, until, std::move(stop)};
  }

  struct Follow {
    Io& io;
    std::shared_ptr<Flight> flight;
    SteadyTime limit;
    std::stop_token stop;
    std::optional<Flight::Result> result{};
    [[nodiscard]] bool await_ready() {
      if (!io.synchronous_) return false;
      result = flight->wait(io.clock_, limit, stop);
      return true;
    }
    bool await_suspend(std::coroutine_handle<> resume) {
      return io.start_follow(flight, limit, stop, result, resume);
    }
    std::optional<Flight::Result> await_resume() { return std::move(result); }
  };
  /// The leader's result, or nullopt at `limit` or on `stop`.
  Follow follow(std::shared_ptr<Flight> flight, SteadyTime limit, std::stop_token stop) noexcept {
    return Follow{*this, std::move(flight), limit, std::move(stop)};
  }

 protected:
  Io(const Clock& clock, bool synchronous) noexcept : clock_(clock), synchronous_(synchronous) {}

  // An asynchronous driver's side of each point: pass it, fill the result
  // (an exception of `op` goes to `error`), then resume `resume`, once;
  // or pass it at once and return false (the coroutine goes on, not
  // suspended). True: `resume` will be resumed.
  virtual bool start_request(Op op, bool creator, std::exception_ptr& error,
                             std::coroutine_handle<> resume) = 0;
  virtual bool start_later(StartOp start, std::exception_ptr& error,
                           std::coroutine_handle<> resume) = 0;
  virtual bool start_sleep(SteadyTime until, std::stop_token stop, bool& woke,
                           std::coroutine_handle<> resume) = 0;
  virtual bool start_follow(const std::shared_ptr<Flight>& flight, SteadyTime limit,
                            std::stop_token stop, std::optional<Flight::Result>& result,
                            std::coroutine_handle<> resume) = 0;

 private:
  const Clock& clock_;
  const bool synchronous_;
};

/// Passes every point in place, on the calling thread.
class SyncIo final : public Io {
 public:
  explicit SyncIo(const Clock& clock) noexcept : Io(clock, true) {}

 private:
  // Never reached: every point is ready at once.
  bool start_request(Op, bool, std::exception_ptr&, std::coroutine_handle<>) override {
    return false;
  }
  // Work that completes later is only given to asynchronous drivers.
  bool start_later(StartOp, std::exception_ptr& error, std::coroutine_handle<>) override {
    error = std::make_exception_ptr(std::logic_error("asynchronous work in a blocking call"));
    return false;
  }
  bool start_sleep(SteadyTime, std::stop_token, bool&, std::coroutine_handle<>) override {
    return false;
  }
  bool start_follow(const std::shared_ptr<Flight>&, SteadyTime, std::stop_token,
                    std::optional<Flight::Result>&, std::coroutine_handle<>) override {
    return false;
  }
};

}  // namespace dogpile::detail
