// SPDX-License-Identifier: MIT
// The coroutine the step is written as (internal), and the synchronous
// driver that runs it in place.
#include <doctest/doctest.h>

#include <coroutine>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "base/task.hpp"
#include "dogpile/clock.hpp"
#include "engine/io.hpp"

using dogpile::detail::Io;
using dogpile::detail::SyncIo;
using dogpile::detail::Task;

namespace {

Task<int> answer(int x) { co_return x * 2; }

Task<std::string> chain(int depth) {
  std::string out;
  for (int i = 0; i < depth; ++i) out += std::to_string(co_await answer(i));
  co_return out;
}

Task<> fails() {
  co_await answer(1);
  throw std::runtime_error("boom");
}

Task<int> catches() {
  try {
    co_await fails();
  } catch (const std::runtime_error& e) {
    co_return std::string(e.what()) == "boom" ? 7 : -1;
  }
  co_return 0;
}

// An awaitable that always suspends and keeps the handle: an asynchronous
// point, resumed by the test.
struct Parked {
  std::coroutine_handle<>* slot;
  [[nodiscard]] bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const noexcept { *slot = h; }
  int await_resume() const noexcept { return 5; }
};

Task<int> parks(std::coroutine_handle<>* slot, std::shared_ptr<int> alive) {
  const int got = co_await Parked{slot};
  co_return got + *alive;
}

Task<int> outer(std::coroutine_handle<>* slot, std::shared_ptr<int> alive) {
  co_return 100 + co_await parks(slot, std::move(alive));
}

}  // namespace

TEST_SUITE("task") {
  TEST_CASE("a task's value and its awaited tasks' values, run in place") {
    CHECK(answer(21).run_here() == 42);
    CHECK(chain(4).run_here() == "0246");
  }

  TEST_CASE("an exception reaches the awaiter, and run_here's caller") {
    CHECK(catches().run_here() == 7);
    CHECK_THROWS_AS(fails().run_here(), std::runtime_error);
  }

  TEST_CASE("a task that suspends: run_here refuses it and frees every frame") {
    std::coroutine_handle<> parked;
    auto alive = std::make_shared<int>(1);
    CHECK_THROWS_AS(outer(&parked, alive).run_here(), std::logic_error);
    CHECK(parked);                  // it did suspend inside
    CHECK(alive.use_count() == 1);  // the frames holding a copy are gone
  }

  TEST_CASE("a suspended task resumes where it stopped and completes its awaiter") {
    std::coroutine_handle<> parked;
    auto alive = std::make_shared<int>(1);
    auto task = outer(&parked, alive);
    task.start(std::noop_coroutine());
    CHECK_FALSE(task.done());
    REQUIRE(parked);
    parked.resume();  // the point passed: both frames finish
    REQUIRE(task.done());
    CHECK(task.result() == 106);
  }

  TEST_CASE("the synchronous driver passes every point in place") {
    dogpile::ManualClock clock;
    SyncIo io(clock);
    CHECK(io.synchronous());
    int ran = 0;
    auto body = [&]() -> Task<int> {
      co_await io.request([&] { ++ran; });
      co_await io.create([&] { ++ran; });
      // A sleep to a time already reached returns at once, awake.
      const bool woke = co_await io.sleep_until(clock.steady_now(), {});
      std::stop_source stopped;
      stopped.request_stop();
      const bool cut =
          co_await io.sleep_until(clock.steady_now() + std::chrono::hours(1), stopped.get_token());
      co_return (woke ? 10 : 0) + (cut ? 100 : 0);
    };
    CHECK(body().run_here() == 10);
    CHECK(ran == 2);
    // What a request throws reaches the awaiting coroutine.
    auto throwing = [&]() -> Task<> {
      co_await io.request([] { throw std::runtime_error("backend"); });
    };
    CHECK_THROWS_AS(throwing().run_here(), std::runtime_error);
  }
}
