// SPDX-License-Identifier: MIT
// Calls that wait without a thread (docs/async.md): the engine's step on
// the asynchronous driver, run by a loop of the test's own — a queue, the
// fixture's ManualClock for its timers, creators run when the test says.
// Everything here runs on the test's one thread.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "async_loop.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::CallOptions;
using dogpile::Outcome;
using dogpile::SteadyTime;
using dogpile::WaitTimeout;
using dogpile::test::Results;
using dogpile::test::start;
using dogpile::test::TestLoop;

TEST_SUITE("async") {
  TEST_CASE("10,000 callers of one cold key on one thread: one creator, every caller served") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    TestLoop loop(f.clock);
    Results results;
    const auto before = f.backend->counters();
    for (int i = 0; i < 10'000; ++i) start(region, loop, "k", f.creator("v"), results);
    loop.run();
    // The leader's creator is handed over; the others follow its flight.
    CHECK(results.ended() == 0);
    CHECK(loop.creators() == 1);
    CHECK(region.in_flight() == 1);
    CHECK(loop.run_creators() == 1);
    CHECK(results.values == 10'000);
    CHECK(std::all_of(results.seen.begin(), results.seen.end(),
                      [](const std::string& v) { return v == "v"; }));
    CHECK(f.creator_calls.load() == 1);
    const auto stats = region.stats();
    CHECK(stats.created == 1);
    CHECK(stats.waited == 9'999);
    // Followers made no request: each caller's one read, the leader's claim
    // and store.
    const auto ops = f.since(before);
    CHECK(ops.gets == 10'000);
    CHECK(ops.adds + ops.cas + ops.sets <= 3);
  }

  TEST_CASE("a fresh hit: one read, served without waiting, as the synchronous call") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    region.get_or_create("k", f.creator("v"));
    TestLoop loop(f.clock);
    const auto sync_before = f.backend->counters();
    CHECK(region.get_or_create("k", f.creator("x")) == "v");
    const auto sync_ops = f.since(sync_before).total();
    const auto before = f.backend->counters();
    Results results;
    Outcome outcome{};
    start(region, loop, "k", f.creator("x"), results, CallOptions{.outcome = &outcome});
    loop.run();
    CHECK(results.values == 1);
    CHECK(results.seen.front() == "v");
    CHECK(outcome == Outcome::fresh);
    CHECK(f.since(before).total() == sync_ops);
    CHECK(sync_ops == 1);
  }

  TEST_CASE("a waiter on another process's lease polls on timers and gets its value") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());  // two processes: two regions
    CacheRegion b(f.backend, f.options());
    TestLoop loop(f.clock);
    Results from_a;
    Results from_b;
    start(a, loop, "k", f.creator("a"), from_a);
    loop.run();
    REQUIRE(loop.creators() == 1);  // a holds the lease, its creator not run yet
    start(b, loop, "k", f.creator("b"), from_b);
    loop.run();
    CHECK(from_b.ended() == 0);  // b waits: on a timer, no thread
    CHECK(b.stats().lock_waits == 1);
    for (int i = 0; i < 5; ++i) loop.advance(100ms);  // b polls; still held
    CHECK(from_b.ended() == 0);
    loop.run_creators();  // a creates and stores
    CHECK(from_a.values == 1);
    for (int i = 0; i < 100 && from_b.ended() == 0; ++i) loop.advance(100ms);
    CHECK(from_b.values == 1);
    CHECK(from_b.seen.front() == "a");
    CHECK(f.creator_calls.load() == 1);  // b never created
    CHECK(loop.creators() == 0);
  }

  TEST_CASE("deadlines and stop tokens end a wait without a thread: WaitTimeout, no creation") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());
    CacheRegion b(f.backend, f.options());
    TestLoop loop(f.clock);
    Results holder;
    start(a, loop, "k", f.creator("a"), holder);
    loop.run();
    REQUIRE(loop.creators() == 1);
    // Another process's lease: a waiter with a deadline, and one stopped.
    Results late;
    Results stopped;
    std::stop_source stop;
    start(b, loop, "k", f.creator("b"), late, CallOptions{.deadline = 3s});
    CacheRegion c(f.backend, f.options());  // a third process
    start(c, loop, "k", f.creator("c"), stopped, CallOptions{.stop = stop.get_token()});
    loop.run();
    const auto timers = loop.timers();  // each waiter's pause before its next poll
    CHECK(timers == 2);
    stop.request_stop();
    loop.run();                 // no time passed
    CHECK(loop.timers() == 1);  // the stopped waiter's pause was cancelled
    CHECK(stopped.timeouts == 1);
    CHECK(stopped.reason == WaitTimeout::Reason::cancelled);
    CHECK(late.ended() == 0);
    for (int i = 0; i < 40 && late.ended() == 0; ++i) loop.advance(100ms);
    CHECK(late.timeouts == 1);
    CHECK(late.reason == WaitTimeout::Reason::deadline);
    CHECK(f.creator_calls.load() == 0);
    // This process's follower, too.
    Results follower;
    start(a, loop, "k", f.creator("a2"), follower, CallOptions{.deadline = 1s});
    loop.run();
    for (int i = 0; i < 20 && follower.ended() == 0; ++i) loop.advance(100ms);
    CHECK(follower.timeouts == 1);
    CHECK(holder.ended() == 0);
    loop.run_creators();
    CHECK(holder.values == 1);
    CHECK(f.creator_calls.load() == 1);
    CHECK(loop.timers() == 0);  // a wait that ended leaves no timer behind
  }

  TEST_CASE("a creator's exception reaches its caller and every follower") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    TestLoop loop(f.clock);
    Results results;
    for (int i = 0; i < 100; ++i) {
      start(
          region, loop, "k",
          [&]() -> std::string {
            f.creator_calls.fetch_add(1);
            throw std::runtime_error("database down");
          },
          results);
    }
    loop.run();
    loop.run_creators();
    CHECK(results.errors == 100);
    CHECK(f.creator_calls.load() == 1);
    CHECK(region.in_flight() == 0);
    // The next caller creates afresh.
    Results next;
    start(region, loop, "k", f.creator("v"), next);
    loop.run();
    loop.run_creators();
    CHECK(next.values == 1);
  }

  TEST_CASE("a herd is woken in one turn of its loop, and a completion that throws leaves by it") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    TestLoop loop(f.clock);
    Results leader;
    start(region, loop, "k", f.creator("v"), leader);
    loop.run();
    REQUIRE(loop.creators() == 1);
    int served = 0;
    for (int i = 0; i < 10; ++i) {
      dogpile::detail::start_get_or_create<std::string, dogpile::detail::Making::now>(
          region, loop, "k", f.creator("x"), CallOptions{}, dogpile::detail::AlwaysCache{},
          [&, i](std::exception_ptr error, std::optional<std::string> value) {
            if (i == 3) throw std::runtime_error("from a completion");
            if (!error && value == "v") ++served;
          });
    }
    loop.run();
    CHECK(region.stats().lock_waits == 10);
    // The creator's end: the leader publishes, its flight posts one wake.
    CHECK_THROWS_AS(loop.run_creators(), std::runtime_error);
    CHECK(served == 3);  // the three before the one that threw, in the order they came
    loop.run();          // the rest, posted again before the exception left
    CHECK(served == 9);
    CHECK(leader.values == 1);
    CHECK(region.in_flight() == 0);
  }

  TEST_CASE("a hung leader's followers start over: one of them creates, every one is served") {
    dogpile::test::RegionFixture f;
    auto o = f.options();
    o.max_creation = 30s;
    o.lock_timeout = 10s;
    CacheRegion region(f.backend, o);
    TestLoop loop(f.clock);
    Results hung;
    start(region, loop, "k", f.creator("late"), hung);
    loop.run();
    REQUIRE(loop.creators() == 1);  // handed over and never run: hung
    Results followers;
    for (int i = 0; i < 100; ++i) start(region, loop, "k", f.creator("retried"), followers);
    loop.run();
    CHECK(region.stats().lock_waits == 100);
    // Past max_creation the flight is given up: its followers start over
    // (read again), one leads a new creation (polling the hung lease until
    // it expires) and the rest follow it.
    for (int i = 0; i < 60 && region.stats().hung_creations == 0; ++i) {
      loop.advance(1s);
      (void)dogpile::test::eventually([&] { return region.stats().hung_creations == 1; },
                                      std::chrono::milliseconds(5));
    }
    REQUIRE(dogpile::test::eventually([&] {
      loop.run();
      return loop.timers() > 0 || loop.creators() == 2;
    }));
    for (int i = 0; i < 60 && loop.creators() < 2; ++i) loop.advance(1s);
    REQUIRE(loop.creators() == 2);
    CHECK(region.stats().hung_creations == 1);
    CHECK(followers.ended() == 0);
    loop.run_creators();
    CHECK(followers.values == 100);
    CHECK(std::all_of(followers.seen.begin(), followers.seen.end(),
                      [](const std::string& v) { return v == "retried"; }));
    CHECK(hung.ended() == 1);
    CHECK(f.creator_calls.load() == 2);
    CHECK(region.in_flight() == 0);
    CHECK(loop.timers() == 0);
  }
}
