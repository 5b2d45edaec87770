// SPDX-License-Identifier: MIT
// CacheRegion's options beyond the core algorithm: per-call expiration,
// should_cache, background regeneration, serve-stale-on-error, invalidation
// and early recomputation (XFetch). In-process backend, ManualClock; the
// background executor runs tasks only when the test says so.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends.hpp"
#include "dogpile/cached.hpp"
#include "dogpile/executor.hpp"
#include "dogpile/region.hpp"
#include "manual_executor.hpp"
#include "region_fixture.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::CallOptions;
using dogpile::ErrorKind;
using dogpile::Invalidation;
using dogpile::Outcome;
using dogpile::RegionOptions;

namespace {

using dogpile::test::RegionFixture;

}  // namespace

TEST_SUITE("region options") {
  TEST_CASE("per-call expiration judges freshness and sets the item's time to live") {
    RegionFixture f;
    auto o = f.options(60s);
    o.stale_grace = 5s;
    CacheRegion region(f.backend, o);
    const CallOptions short_lived{.expiration = 2s};
    region.get_or_create("k", f.creator("v1"), short_lived);
    f.clock.advance(3s);
    CHECK(region.get_or_create("k", f.creator("v2"), short_lived) == "v2");  // stale at 2 s
    CHECK(region.get_or_create("k", f.creator("v3")) == "v2");               // fresh at 60 s
    f.clock.advance(7s);  // the item lived 2 s + 5 s grace
    CHECK_FALSE(f.backend->get(region.backend_key("k")).has_value());
    const CallOptions forever{.expiration = dogpile::no_expiration};
    region.get_or_create("n", f.creator("never"), forever);
    f.clock.advance(24h * 400);
    CHECK(region.get_or_create("n", f.creator("x"), forever) == "never");
  }

  TEST_CASE("should_cache: a refused value is returned but not stored") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options());
    auto non_empty = [](const std::string& v) { return !v.empty(); };
    CHECK(region.get_or_create("k", f.creator(""), CallOptions{}, non_empty).empty());
    CHECK(f.backend->size() == 0);  // nothing stored, lock released
    CHECK(region.get_or_create("k", f.creator("real"), CallOptions{}, non_empty) == "real");
    CHECK(region.get<std::string>("k") == "real");
    CHECK(f.creator_calls == 2);
  }

  TEST_CASE("background: the stale winner returns at once, the new value follows") {
    RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    CacheRegion region(f.backend, f.background(executor));
    region.get_or_create("k", f.creator("old"));
    f.clock.advance(11s);

    Outcome outcome{};
    const CallOptions background{.background = true, .outcome = &outcome};
    CHECK(region.get_or_create("k", f.creator("new"), background) == "old");
    CHECK(outcome == Outcome::stale);
    CHECK(f.creator_calls == 1);  // not run yet
    CHECK(executor->queued() == 1);
    CHECK_FALSE(f.lock_is_free(region, "k"));  // held until the background creation ends
    // Meanwhile this process's callers serve the stale value without asking for the lock.
    const auto before = f.backend->counters();
    CHECK(region.get_or_create("k", f.creator("again"), background) == "old");
    CHECK(f.backend->counters().adds == before.adds);

    CHECK(executor->run_all() == 1);
    CHECK(f.creator_calls == 2);
    CHECK(f.lock_is_free(region, "k"));
    CHECK(region.get_or_create("k", f.creator("x"), background, [](auto&) { return true; }) ==
          "new");
    CHECK(region.stats().background_refreshes == 1);
  }

  TEST_CASE("background: a refused task runs in the caller, a dropped one frees its lock") {
    RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>(1);
    CacheRegion region(f.backend, f.background(executor));
    const CallOptions background{.background = true};
    region.get_or_create("a", f.creator("a1"));
    region.get_or_create("b", f.creator("b1"));
    f.clock.advance(11s);
    CHECK(region.get_or_create("a", f.creator("a2"), background) == "a1");  // queued
    Outcome outcome{};
    CHECK(region.get_or_create("b", f.creator("b2"),
                               CallOptions{.background = true, .outcome = &outcome}) ==
          "b2");  // the queue is full: created here
    CHECK(outcome == Outcome::created);
    executor->drop_all();
    CHECK(f.lock_is_free(region, "a"));
    CHECK(region.get_or_create("a", f.creator("a3")) == "a3");
  }

  TEST_CASE("background: a creator that throws leaves the stale value and frees the lock") {
    RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    CacheRegion region(f.backend, f.background(executor));
    region.get_or_create("k", f.creator("old"));
    f.clock.advance(11s);
    CHECK(region.get_or_create(
              "k", []() -> std::string { throw std::runtime_error("db down"); },
              CallOptions{.background = true}) == "old");
    executor->run_all();
    CHECK(f.errors_of(ErrorKind::creator) == 1);
    CHECK(region.stats().creation_errors == 1);
    CHECK(f.lock_is_free(region, "k"));
    CHECK(region.get_or_create("k", f.creator("new"), CallOptions{.background = true}) == "old");
    executor->run_all();
    CHECK(region.get<std::string>("k") == "new");
  }

  TEST_CASE("background needs a stale value: a cold key is still created by the caller") {
    RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    CacheRegion region(f.backend, f.background(executor));
    CHECK(region.get_or_create("k", f.creator("v"), CallOptions{.background = true}) == "v");
    CHECK(executor->queued() == 0);
  }

  TEST_CASE(
      "serve_stale_on_error: a failing creator gives the stale value, the next call retries") {
    RegionFixture f;
    auto o = f.options();
    o.serve_stale_on_error = true;
    CacheRegion region(f.backend, o);
    region.get_or_create("k", f.creator("old"));
    f.clock.advance(11s);
    Outcome outcome{};
    auto failing = []() -> std::string { throw std::runtime_error("db down"); };
    CHECK(region.get_or_create("k", failing, &outcome) == "old");
    CHECK(outcome == Outcome::stale);
    CHECK(f.errors_of(ErrorKind::creator) == 1);
    CHECK(f.errors.back().second == "create: db down; serving the stale value");
    CHECK(region.stats().creation_errors == 1);
    CHECK(f.lock_is_free(region, "k"));
    CHECK(region.get_or_create("k", f.creator("new"), &outcome) == "new");  // retried
    CHECK(outcome == Outcome::created);
    // Without a stale value there is nothing to serve: the exception goes through.
    CHECK_THROWS_AS(region.get_or_create("cold", failing), std::runtime_error);
  }

  TEST_CASE("serve_stale_on_error off: the exception reaches the caller even with a stale value") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options());
    region.get_or_create("k", f.creator("old"));
    f.clock.advance(11s);
    CHECK_THROWS_AS(
        region.get_or_create("k", []() -> std::string { throw std::runtime_error("x"); }),
        std::runtime_error);
  }

  TEST_CASE("hard invalidation: older values are misses, here at once") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options(dogpile::no_expiration));
    region.get_or_create("k", f.creator("old"));
    f.clock.advance(1ms);
    region.invalidate(Invalidation::hard);
    f.clock.advance(1ms);
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("new"), &outcome) == "new");
    CHECK(outcome == Outcome::created);
    CHECK(region.get_or_create("k", f.creator("newer"), &outcome) == "new");
    CHECK(outcome == Outcome::fresh);
    CHECK_FALSE(region.get_value_metadata<std::string>("never-set").has_value());
  }

  TEST_CASE("soft invalidation: older values are stale, served while one caller regenerates") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options(dogpile::no_expiration));
    region.get_or_create("k", f.creator("old"));
    f.clock.advance(1ms);
    region.invalidate(Invalidation::soft);
    f.clock.advance(1ms);
    auto elsewhere = f.backend->make_lock(region.backend_key("k"), 30s);
    REQUIRE(elsewhere->try_lock());
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("new"), &outcome) == "old");
    CHECK(outcome == Outcome::stale);
    CHECK_FALSE(region.get<std::string>("k").has_value());  // not fresh
    elsewhere->unlock();
    // This process remembers the lock as held elsewhere for a while (at
    // least 100 ms) rather than ask for it on every stale hit.
    f.clock.advance(100ms);
    CHECK(region.get_or_create("k", f.creator("new"), &outcome) == "new");
    CHECK(outcome == Outcome::created);
  }

  TEST_CASE("one key soft-invalidated: served stale while one caller regenerates, others fresh") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options(std::chrono::hours(1)));
    CacheRegion other(f.backend, f.options(std::chrono::hours(1)));  // another process
    region.get_or_create("k", f.creator("old"));
    region.get_or_create("untouched", f.creator("u"));
    const auto before = f.backend->counters();
    CHECK(region.invalidate("k", Invalidation::soft));
    const auto cost = f.since(before);
    CHECK(cost.gets + cost.cas == 2);  // gets, then cas of the marked value
    CHECK_FALSE(region.invalidate("never-made", Invalidation::soft));
    // Seen by every process at once, whatever the value's age.
    CHECK_FALSE(other.get<std::string>("k").has_value());  // not fresh
    auto elsewhere = f.backend->make_lock(region.backend_key("k"), 30s);
    REQUIRE(elsewhere->try_lock());
    Outcome outcome{};
    CHECK(other.get_or_create("k", f.creator("new"), &outcome) == "old");
    CHECK(outcome == Outcome::stale);
    elsewhere->unlock();
    f.clock.advance(100ms);  // past the memory of the lock held elsewhere
    CHECK(other.get_or_create("k", f.creator("new"), &outcome) == "new");
    CHECK(outcome == Outcome::created);
    CHECK(region.get<std::string>("k") == "new");
    CHECK(region.get_or_create("untouched", f.creator("x"), &outcome) == "u");
    CHECK(outcome == Outcome::fresh);
  }

  TEST_CASE("one key hard-invalidated: a miss for every process, the next caller creates") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options(std::chrono::hours(1)));
    region.get_or_create("k", f.creator("old"));
    CHECK(region.invalidate("k"));
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("new"), &outcome) == "new");
    CHECK(outcome == Outcome::created);
  }

  TEST_CASE("cached(): invalidate_soft marks one argument's result stale") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options(std::chrono::hours(1)));
    int calls = 0;
    auto square = dogpile::cached(region, "square", [&](int x) {
      ++calls;
      return x * x + calls * 1000;
    });
    CHECK(square(3) == 1009);
    CHECK(square(4) == 2016);
    CHECK(square.invalidate_soft(3));
    CHECK(square(3) == 3009);  // stale, and nobody else refreshing: this call does
    CHECK(square(4) == 2016);
    CHECK(calls == 3);
  }

  TEST_CASE("another process sees an invalidation at its next check, one get per interval") {
    RegionFixture f;
    auto o = f.options(dogpile::no_expiration);
    o.invalidation_check = 1s;
    CacheRegion a(f.backend, o);
    CacheRegion b(f.backend, o);
    b.get_or_create("k", f.creator("old"));  // b read the (absent) record: next check in 1 s
    f.clock.advance(100ms);
    a.invalidate(Invalidation::hard);
    f.clock.advance(100ms);
    const auto before = f.backend->counters();
    for (int i = 0; i < 50; ++i) CHECK(b.get_or_create("k", f.creator("new")) == "old");
    CHECK(f.backend->counters().gets - before.gets == 50);  // no check inside the interval
    f.clock.advance(800ms);
    Outcome outcome{};
    CHECK(b.get_or_create("k", f.creator("new"), &outcome) == "new");
    CHECK(outcome == Outcome::created);
    CHECK(b.stats().invalidation_checks == 2);
  }

  TEST_CASE("a creation that started before an invalidation is invalidated too") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options(dogpile::no_expiration));
    CHECK(region.get_or_create("k", [&] {
      f.clock.advance(1s);                    // the creator runs for a second, during which...
      region.invalidate(Invalidation::hard);  // ...the data it read is invalidated
      f.clock.advance(1s);
      return std::string("built from old data");
    }) == "built from old data");
    CHECK(region.get_or_create("k", f.creator("rebuilt")) == "rebuilt");
  }

  TEST_CASE("a lost invalidation record is written back by a process that knows it") {
    RegionFixture f;
    auto o = f.options(dogpile::no_expiration);
    o.invalidation_check = 1s;
    CacheRegion a(f.backend, o);
    a.invalidate(Invalidation::hard);
    f.backend->remove(o.key_prefix + "#inv");  // evicted
    f.clock.advance(2s);
    a.get_or_create("k", f.creator("v"));  // the check finds it missing and adds it back
    CacheRegion b(f.backend, o);
    CHECK(f.backend->get(o.key_prefix + "#inv").has_value());
  }

  TEST_CASE("XFetch: early recomputation comes with probability exp(-remaining / (delta beta))") {
    // With the lock held elsewhere, a caller that draws "early" cannot
    // recompute: it counts in early_recomputes and returns the fresh value.
    RegionFixture f;
    auto o = f.options(60s);
    o.early_recompute_beta = 1.0;
    o.random_seed = 42;
    CacheRegion region(f.backend, o);
    region.get_or_create("k", [&] {
      f.clock.advance(2s);  // delta = 2 s
      return std::string("v");
    });
    auto elsewhere = f.backend->make_lock(region.backend_key("k"), 300s);
    REQUIRE(elsewhere->try_lock());
    const auto expiry = f.clock.now() + 60s;
    constexpr int kCalls = 4000;
    for (double r : {0.5, 1.0, 2.0, 4.0}) {  // remaining time, in units of delta
      f.clock.set(expiry - std::chrono::duration_cast<dogpile::Duration>(r * 2s));
      const auto before = region.stats().early_recomputes;
      for (int i = 0; i < kCalls; ++i) {
        Outcome outcome{};
        CHECK(region.get_or_create("k", f.creator("x"), &outcome) == "v");
        CHECK(outcome == Outcome::fresh);
      }
      const double measured =
          static_cast<double>(region.stats().early_recomputes - before) / kCalls;
      const double expected = std::exp(-r);
      const double sigma = std::sqrt(expected * (1 - expected) / kCalls);
      MESSAGE("remaining " << r << " delta: early " << measured << ", expected " << expected);
      CHECK_MESSAGE(
          std::abs(measured - expected) < 5 * sigma,
          "remaining " << r << " delta: measured " << measured << ", expected " << expected);
    }
    // Far from expiry (40 delta) it never fires.
    f.clock.set(expiry - 80s);
    const auto before = region.stats().early_recomputes;
    for (int i = 0; i < kCalls; ++i) region.get_or_create("k", f.creator("x"));
    CHECK(region.stats().early_recomputes == before);
    CHECK(f.creator_calls == 0);
  }

  TEST_CASE("XFetch steady state: a hot key is refreshed before it expires, no one sees it stale") {
    RegionFixture f;
    auto o = f.options(10s);
    o.early_recompute_beta = 1.0;
    o.random_seed = 7;
    CacheRegion region(f.backend, o);
    int creations = 0;
    int stale = 0;
    dogpile::TimePoint last_created;
    std::vector<dogpile::Duration> refreshed_before_expiry;
    auto creator = [&] {
      ++creations;
      const auto previous = region.get_value_metadata<std::string>("hot");
      if (previous) refreshed_before_expiry.push_back(previous->created_at + 10s - f.clock.now());
      f.clock.advance(200ms);  // delta = 200 ms
      last_created = f.clock.now();
      return std::to_string(creations);
    };
    for (int step = 0; step < 20000; ++step) {  // 20,000 calls, 10 ms apart: 200 s
      Outcome outcome{};
      region.get_or_create("hot", creator, &outcome);
      if (outcome == Outcome::stale) ++stale;
      f.clock.advance(10ms);
    }
    MESSAGE("steady state over 200 s: " << creations << " creations, " << stale << " stale");
    CHECK(stale == 0);
    CHECK(creations >= 20);  // at least one per 10 s of simulated time
    CHECK(creations <= 30);  // and not many more: early, but not needlessly early
    for (auto before_expiry : refreshed_before_expiry) CHECK(before_expiry > 0s);
    CHECK(region.stats().early_recomputes == static_cast<std::uint64_t>(creations - 1));
  }

  TEST_CASE("XFetch with many threads: never two creators at once") {
    RegionFixture f;
    auto o = f.options(1s);
    o.early_recompute_beta = 2.0;
    o.invalidation_check = std::nullopt;
    CacheRegion region(f.backend, o);
    std::atomic<int> running{0};
    std::atomic<int> most{0};
    std::atomic<int> creations{0};
    std::vector<std::jthread> threads;
    std::latch start(8);
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 3000; ++i) {
          f.clock.advance(1ms);
          region.get_or_create("hot", [&] {
            const int now = running.fetch_add(1) + 1;
            int seen = most.load();
            while (now > seen && !most.compare_exchange_weak(seen, now)) {
            }
            creations.fetch_add(1);
            f.clock.advance(20ms);
            running.fetch_sub(1);
            return std::string("v");
          });
        }
      });
    }
    threads.clear();
    CHECK(most.load() == 1);
    CHECK(creations.load() > 1);
    CHECK(region.stats().early_recomputes > 0);
  }

  TEST_CASE("options are checked") {
    RegionFixture f;
    auto bad = [&](auto change) {
      auto o = f.options();
      change(o);
      CHECK_THROWS_AS(CacheRegion(f.backend, o), std::invalid_argument);
    };
    bad([](RegionOptions& o) { o.early_recompute_beta = 0.0; });
    bad([](RegionOptions& o) { o.early_recompute_beta = -1.0; });
    bad([](RegionOptions& o) { o.invalidation_check = 0s; });
    bad([](RegionOptions& o) { o.executor = std::make_shared<dogpile::ThreadPoolExecutor>(); });
  }
}

TEST_SUITE("executor") {
  TEST_CASE("ThreadPoolExecutor runs what it accepts and refuses past its capacity") {
    std::atomic<int> ran{0};
    std::latch blocker(1);
    {
      dogpile::ThreadPoolExecutor pool(1, 2);
      CHECK(pool.try_submit([&] { blocker.wait(); }));  // occupies the only thread
      CHECK(dogpile::test::eventually([&] { return pool.queued() == 0; }));
      CHECK(pool.try_submit([&] { ran.fetch_add(1); }));
      CHECK(pool.try_submit([&] { ran.fetch_add(1); }));
      CHECK_FALSE(pool.try_submit([&] { ran.fetch_add(1); }));  // queue of 2 is full
      blocker.count_down();
    }  // the destructor runs what was queued
    CHECK(ran.load() == 2);
    CHECK_THROWS_AS(dogpile::ThreadPoolExecutor(0, 1), std::invalid_argument);
  }
}
