// SPDX-License-Identifier: MIT
// The asynchronous driver (internal): passes a call's four points on a Loop
// (dogpile/detail/loop.hpp) without holding a thread (docs/async.md).
//
//   request  in place if the backend never blocks; else on the loop's
//            blocking pool, the call resumed on the loop after
//   create   on the loop's creator executor, resumed on the loop after
//   sleep    a timer on the loop; the call's stop token ends it early
//   follow   a continuation on the flight, run by the leader's publish;
//            the limit's timer and the stop token end it early
//
// Each point is passed exactly once, whichever of its ends comes first (an
// atomic flag); the losers find the flag set and touch nothing of the call.
#pragma once

#include <atomic>
#include <coroutine>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>

#include "dogpile/detail/loop.hpp"
#include "engine/io.hpp"

namespace dogpile::detail {

class AsyncIo final : public Io {
 public:
  AsyncIo(const Clock& clock, Loop& loop) noexcept : Io(clock, false), loop_(loop) {}

 private:
  // A point's ends (a timer, the stop token, a flight's completion) race;
  // the first passes it: fills the result, cancels the timer if it was not
  // the timer, and resumes the call on the loop (a flight, as one of the
  // waiters it wakes together: Flight::Waiter). The call's result lives in
  // its frame, which waits for exactly that resumption.
  struct Race final : Flight::Waiter, std::enable_shared_from_this<Race> {
    Loop* loop = nullptr;
    void (*then)(void*) = nullptr;  // what follows the point, on the loop: then(target)
    void* target = nullptr;
    bool* woke = nullptr;                             // a sleep's
    std::optional<Flight::Result>* result = nullptr;  // a follow's
    std::atomic<bool> passed{false};
    std::function<void()> cancel_timer;  // set once armed, before the flight or stop can end it
    struct OnStop {
      Race* race;
      void operator()() const {
        if (auto alive = race->weak_from_this().lock()) pass(std::move(alive), false);
      }
    };
    std::optional<std::stop_callback<OnStop>> on_stop;

    // The flight's end (its Wake runs what follows, in a turn of its own).
    bool claim(const Flight::Result& got) override {
      if (!take(false)) return false;
      *result = got;
      return true;
    }
    void run() override { then(target); }
    void post(std::function<void()> fn) override { loop->post(std::move(fn)); }

    // True for the end that comes first: the timer, if it was not that end,
    // is cancelled (and let go: a loop may count it as work). The timer's
    // own end leaves its canceller alone: a timer already due may fire
    // while the canceller is being set.
    bool take(bool by_timer) {
      if (passed.exchange(true, std::memory_order_acq_rel)) return false;
      if (!by_timer) {
        const auto cancel = std::move(cancel_timer);
        if (cancel) cancel();
      }
      return true;
    }
  };
  // A timer's or the stop token's end.
  static void pass(std::shared_ptr<Race> race, bool by_timer) {
    if (!race->take(by_timer)) return;
    if (race->woke != nullptr) *race->woke = by_timer;
    race->loop->post([then = race->then, target = race->target] { then(target); });
  }  // `race` may end here, even inside its own stop callback: nothing follows
  static void resume_coroutine(void* address) {
    std::coroutine_handle<>::from_address(address).resume();
  }
  // The stop token as one of a race's ends (a raw pointer: the callback is
  // the race's own, and goes with it).
  static void end_on_stop(Race& race, std::stop_token stop) {
    if (!stop.stop_possible()) return;
    race.on_stop.emplace(std::move(stop), Race::OnStop{&race});
  }

  // Each point arms its ends last: once one is armed the call may resume,
  // on another thread, and its awaiter (in the call's frame) may be gone,
  // so nothing of it is read after (hence the copies first).

  bool start_sleep(SteadyTime until, std::stop_token stop, bool& woke,
                   std::coroutine_handle<> resume) override {
    Loop& loop = loop_;
    const Duration delay = until - clock().steady_now();
    auto race = std::make_shared<Race>();
    race->loop = &loop;
    race->then = &resume_coroutine;
    race->target = resume.address();
    race->woke = &woke;
    race->cancel_timer = loop.post_at(until, delay, [race] { pass(race, true); });
    end_on_stop(*race, std::move(stop));
    return true;
  }

  bool start_follow(const std::shared_ptr<Flight>& followed, SteadyTime limit, std::stop_token stop,
                    std::optional<Flight::Result>& result,
                    std::coroutine_handle<> resume) override {
    follow_then(followed, limit, std::move(stop), result, &resume_coroutine, resume.address());
    return true;
  }

 public:
  /// A follow with no coroutine suspended on it: the leader's result (or
  /// nullopt at `limit` or on `stop`) goes to `result`, then then(target)
  /// runs on the loop, once. Nothing of the caller is read after the
  /// flight, the timer or `stop` are armed.
  void follow_then(const std::shared_ptr<Flight>& followed, SteadyTime limit, std::stop_token stop,
                   std::optional<Flight::Result>& result, void (*then)(void*), void* target) {
    const std::shared_ptr<Flight> flight = followed;  // the caller's may go
    Loop& loop = loop_;
    const void* runs_on = loop.runs_on();  // (the loop may go too)
    const Duration delay = limit - clock().steady_now();
    auto race = std::make_shared<Race>();
    race->loop = &loop;
    race->then = then;
    race->target = target;
    race->result = &result;
    if (limit != SteadyTime::max()) {
      race->cancel_timer = loop.post_at(limit, delay, [race] { pass(race, true); });
    }
    end_on_stop(*race, std::move(stop));
    flight->on_complete(race, runs_on);
  }

 private:
  bool start_request(Op op, bool creator, std::exception_ptr& error,
                     std::coroutine_handle<> resume) override {
    if (!creator && loop_.requests_in_place()) {
      try {
        op();
      } catch (...) {
        error = std::current_exception();
      }
      return false;
    }
    Loop& loop = loop_;
    auto work = [&loop, op, &error, resume] {
      try {
        op();
      } catch (...) {
        error = std::current_exception();
      }
      loop.post([resume] { resume.resume(); });
    };
    if (creator) {
      loop_.run_creator(std::move(work));
    } else {
      loop_.run_blocking(std::move(work));
    }
    return true;
  }

  bool start_later(StartOp start, std::exception_ptr& error,
                   std::coroutine_handle<> resume) override {
    Loop& loop = loop_;
    // `done` may run before start returns; the resumption is posted either way.
    return start([&loop, &error, resume](std::exception_ptr got) {
      error = std::move(got);
      loop.post([resume] { resume.resume(); });
    });
  }

 public:
  Loop* loop() noexcept override { return &loop_; }

 private:
  Loop& loop_;
};

}  // namespace dogpile::detail
