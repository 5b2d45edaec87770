// SPDX-License-Identifier: MIT
// Bounded waits (SPEC I3): every wait ends by the call's deadline (or stop
// token, or max_wait) with the stale value or WaitTimeout, never a second
// creator unless asked; a hung creator's lock stops being extended after
// max_creation; the destructor abandons queued background work. Time is the
// fixture's ManualClock: the tests move it, the waiters follow.
#include <doctest/doctest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "backends.hpp"
#include "dogpile/executor.hpp"
#include "manual_executor.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::CallOptions;
using dogpile::Outcome;
using dogpile::WaitTimeout;
using dogpile::test::eventually;
using dogpile::test::Gate;

namespace {

// Runs `call` on a thread; the reason it gave up, or nullopt if it returned.
struct Outcomes {
  std::atomic<int> timeouts{0};
  std::atomic<int> returned{0};
  std::optional<WaitTimeout::Reason> reason;
  std::mutex mutex;
  template <class Call>
  void run(Call call) {
    try {
      call();
      returned.fetch_add(1);
    } catch (const WaitTimeout& e) {
      std::lock_guard lock(mutex);
      reason = e.reason();
      timeouts.fetch_add(1);
    }
  }
};

}  // namespace

TEST_SUITE("deadlines") {
  TEST_CASE("a follower in this process gives up at its deadline: WaitTimeout, no second creator") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    Gate gate;
    std::jthread leader([&] { region.get_or_create("k", [&] { return gate.pass("v"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    Outcomes out;
    std::jthread follower([&] {
      out.run([&] { region.get_or_create("k", f.creator("second"), CallOptions{.deadline = 2s}); });
    });
    // Waiting on the clock: the leader's lock keeper, and the follower.
    REQUIRE(eventually([&] { return region.stats().lock_waits == 1 && f.clock.waiters() >= 2; }));
    f.clock.advance(1999ms);
    CHECK(out.timeouts.load() == 0);
    f.clock.advance(1ms);
    follower.join();
    CHECK(out.timeouts.load() == 1);
    CHECK(out.reason == WaitTimeout::Reason::deadline);
    CHECK(f.creator_calls.load() == 0);
    gate.open = true;
    leader.join();
    CHECK(region.stats().wait_timeouts == 1);
    CHECK(region.get<std::string>("k") == "v");
  }

  TEST_CASE("a waiter on another process gives up at its deadline, the region default deadline") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());
    auto o = f.options();
    o.deadline = 3s;
    CacheRegion b(f.backend, o);
    Gate gate;
    std::jthread holder([&] { a.get_or_create("k", [&] { return gate.pass("v"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    Outcomes out;
    std::jthread waiter([&] { out.run([&] { b.get_or_create("k", f.creator("b")); }); });
    // b polls, pausing on the clock between polls, until 3 s have passed.
    CHECK(f.advance_until([&] { return out.timeouts.load() == 1; }, 100ms));
    waiter.join();
    CHECK(out.reason == WaitTimeout::Reason::deadline);
    CHECK(f.creator_calls.load() == 0);
    CHECK(b.stats().wait_timeouts == 1);
    gate.open = true;
  }

  TEST_CASE("a poll cut short by the call's own deadline ends in WaitTimeout, not a creation") {
    // The deadline bounds backend requests too: a poll in flight when it
    // passes fails. That is the wait running out, not the server going away.
    dogpile::test::RegionFixture f;
    auto faulty = std::make_shared<dogpile::test::FaultyBackend>(f.backend);
    CacheRegion a(f.backend, f.options());
    CacheRegion b(faulty, f.options());
    Gate gate;
    std::jthread holder([&] { a.get_or_create("k", [&] { return gate.pass("v"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    Outcomes out;
    std::jthread waiter([&] {
      out.run([&] { b.get_or_create("k", f.creator("b"), CallOptions{.deadline = 500ms}); });
    });
    // b pauses before its first poll (well within 500 ms); then the clock
    // jumps to the deadline, and that poll fails.
    REQUIRE(eventually([&] { return b.stats().lock_waits == 1 && f.clock.waiters() >= 2; }));
    faulty->fail_get = true;
    f.clock.advance(500ms);
    waiter.join();
    CHECK(out.timeouts.load() == 1);
    CHECK(out.reason == WaitTimeout::Reason::deadline);
    CHECK(f.creator_calls.load() == 0);
    CHECK(faulty->failures.load() >= 1);  // the poll was sent, and failed
    gate.open = true;
  }

  TEST_CASE("with a stale value at hand, nobody waits: the deadline never comes into it") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());
    CacheRegion b(f.backend, f.options());
    a.set("k", std::string("old"));
    f.clock.advance(11s);
    Gate gate;
    std::jthread holder([&] { a.get_or_create("k", [&] { return gate.pass("new"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    Outcome outcome{};
    CHECK(b.get_or_create("k", f.creator("b"), CallOptions{.outcome = &outcome, .deadline = 1ms}) ==
          "old");
    CHECK(outcome == Outcome::stale);
    gate.open = true;
  }

  TEST_CASE("a stop token ends a wait the same way") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());
    CacheRegion b(f.backend, f.options());
    Gate gate;
    std::jthread holder([&] { a.get_or_create("k", [&] { return gate.pass("v"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    std::stop_source stop;
    Outcomes out;
    std::jthread waiter([&] {
      out.run([&] { b.get_or_create("k", f.creator("b"), CallOptions{.stop = stop.get_token()}); });
    });
    REQUIRE(eventually([&] { return f.clock.sleepers() >= 1; }));
    stop.request_stop();
    waiter.join();
    CHECK(out.reason == WaitTimeout::Reason::cancelled);
    gate.open = true;
  }

  TEST_CASE("max_wait gives up (WaitTimeout), or creates only when create_after_max_wait") {
    for (bool create_after : {false, true}) {
      CAPTURE(create_after);
      dogpile::test::RegionFixture f;
      CacheRegion a(f.backend, f.options());
      auto o = f.options();
      o.wait.max_wait = 2s;
      o.wait.create_after_max_wait = create_after;
      CacheRegion b(f.backend, o);
      Gate gate;
      std::jthread holder([&] { a.get_or_create("k", [&] { return gate.pass("from a"); }); });
      REQUIRE(eventually([&] { return gate.entered.load(); }));
      Outcomes out;
      std::string got;
      std::jthread waiter(
          [&] { out.run([&] { got = b.get_or_create("k", f.creator("from b")); }); });
      CHECK(f.advance_until([&] { return out.timeouts.load() + out.returned.load() == 1; }, 100ms));
      waiter.join();
      if (create_after) {
        CHECK(got == "from b");
        CHECK(f.creator_calls.load() == 1);
        CHECK(b.stats().degraded == 1);
      } else {
        CHECK(out.reason == WaitTimeout::Reason::max_wait);
        CHECK(f.creator_calls.load() == 0);
      }
      gate.open = true;
    }
  }

  TEST_CASE(
      "a hung creator: its lock stops being extended after max_creation, and the fleet moves on") {
    dogpile::test::RegionFixture f;
    auto o = f.options();
    o.max_creation = 60s;
    o.lock_timeout = 10s;
    CacheRegion a(f.backend, o);
    CacheRegion b(f.backend, f.options());
    Gate gate;
    std::jthread hung([&] { a.get_or_create("k", [&] { return gate.pass("late"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    // While it runs, the keeper extends its lock (every 3 s for a 10 s lock).
    for (int i = 0; i < 20; ++i) {
      REQUIRE(eventually([&] { return f.clock.waiters() >= 1; }));  // the keeper waits
      f.clock.advance(3s);
      REQUIRE(eventually([&] {
        return f.backend->counters().lock_extends >= std::uint64_t(i + 1) ||
               a.stats().hung_creations == 1;
      }));
      if (a.stats().hung_creations == 1) break;
    }
    REQUIRE(a.stats().hung_creations == 1);
    CHECK(f.clock.now() - dogpile::ManualClock::default_start() >= 60s);
    const auto extends = f.backend->counters().lock_extends;
    CHECK(eventually([&] { return f.errors_of(dogpile::ErrorKind::lock) >= 1; }));
    // Another process takes over once the lock expires (10 s after its last extension).
    std::string got;
    std::atomic<bool> done{false};
    std::jthread other([&] {
      got = b.get_or_create("k", f.creator("from b"));
      done = true;
    });
    CHECK(f.advance_until([&] { return done.load(); }, 500ms));
    other.join();
    CHECK(got == "from b");
    CHECK(f.backend->counters().lock_extends == extends);  // never extended again
    gate.open = true;  // the hung creator finishes at last: its store is fenced out
    hung.join();
    CHECK(a.stats().fenced_out == 1);
    CHECK(b.get<std::string>("k") == "from b");
  }

  TEST_CASE("a hung creator's followers in its own process start over and are served") {
    dogpile::test::RegionFixture f;
    auto o = f.options();
    o.max_creation = 30s;
    o.lock_timeout = 10s;
    CacheRegion a(f.backend, o);
    Gate gate;
    std::jthread hung([&] { a.get_or_create("k", [&] { return gate.pass("late"); }); });
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    std::string got;
    std::atomic<bool> done{false};
    std::jthread follower([&] {
      got = a.get_or_create("k", f.creator("retried"));
      done = true;
    });
    REQUIRE(eventually([&] { return a.stats().lock_waits == 1; }));
    CHECK(f.advance_until([&] { return done.load(); }, 1s));
    follower.join();
    CHECK(got == "retried");
    CHECK(a.stats().hung_creations == 1);
    gate.open = true;
  }

  TEST_CASE("the destructor abandons queued background jobs at once, releasing their locks") {
    dogpile::test::RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>(64);
    {
      CacheRegion region(f.backend, f.background(executor));
      for (int i = 0; i < 20; ++i) region.set("k" + std::to_string(i), std::string("old"));
      f.clock.advance(11s);
      for (int i = 0; i < 20; ++i) {
        CHECK(region.get_or_create("k" + std::to_string(i), f.creator("new"),
                                   CallOptions{.background = true}) == "old");
      }
      CHECK(executor->queued() == 20);
      CHECK(region.stats().background_refreshes == 20);
    }  // returns without running them
    CHECK(f.creator_calls.load() == 0);
    CacheRegion after(f.backend, f.options());
    for (int i = 0; i < 20; ++i) CHECK(f.lock_is_free(after, "k" + std::to_string(i)));
    CHECK(executor->run_all() == 20);  // the dropped tasks do nothing now
    CHECK(f.creator_calls.load() == 0);
  }

  TEST_CASE("the destructor waits for a running job only") {
    dogpile::test::RegionFixture f;
    auto pool = std::make_shared<dogpile::ThreadPoolExecutor>(1, 64);
    Gate gate;
    std::atomic<int> ran{0};
    auto region = std::make_unique<CacheRegion>(f.backend, f.background(pool));
    for (int i = 0; i < 5; ++i) region->set("k" + std::to_string(i), std::string("old"));
    f.clock.advance(11s);
    for (int i = 0; i < 5; ++i) {
      region->get_or_create(
          "k" + std::to_string(i),
          [&gate, &ran, i] {
            ran.fetch_add(1);
            return i == 0 ? gate.pass("new") : std::string("new");
          },
          CallOptions{.background = true});
    }
    REQUIRE(eventually([&] { return gate.entered.load(); }));  // job 0 runs; 1-4 queued
    std::atomic<bool> destroyed{false};
    std::jthread destroyer([&] {
      region.reset();
      destroyed = true;
    });
    // The destructor gives the queued jobs' locks back, then waits for job 0.
    REQUIRE(eventually([&] {
      for (int i = 1; i < 5; ++i) {
        auto lock = f.backend->make_lock("k" + std::to_string(i), 30s);
        if (!lock->try_lock()) return false;
        lock->unlock();
      }
      return true;
    }));
    CHECK_FALSE(destroyed.load());
    gate.open = true;
    destroyer.join();
    CHECK(ran.load() == 1);
  }
}
