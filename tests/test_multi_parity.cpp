// SPDX-License-Identifier: MIT
// get_or_create_multi has every option of get_or_create, because both run
// the one engine: per-call expiration, should_cache, serve-stale-on-error,
// early recomputation, background regeneration, deadlines; and its creation
// times come from the region's clock.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/cached.hpp"
#include "dogpile/executor.hpp"
#include "format/envelope.hpp"
#include "manual_executor.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::CallOptions;
using dogpile::test::eventually;

namespace {

using Keys = std::vector<std::string>;

// A multi creator that makes "<prefix><key>" and records each call's keys.
struct Maker {
  std::string prefix;
  std::vector<Keys> calls;
  std::vector<std::string> operator()(std::span<const std::string_view> keys) {
    calls.emplace_back(keys.begin(), keys.end());
    std::vector<std::string> out;
    for (auto k : keys) out.push_back(prefix + std::string(k));
    return out;
  }
};

}  // namespace

TEST_SUITE("multi parity") {
  TEST_CASE("per-call expiration judges freshness and sets the items' time to live") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options(60s));
    Maker make{"v:"};
    const CallOptions short_lived{.expiration = dogpile::Expiration(5s)};
    region.get_or_create_multi(Keys{"a", "b"}, std::ref(make), short_lived);
    f.clock.advance(6s);
    // Stale by the call's 5 s (fresh by the region's 60 s): regenerated.
    Maker again{"w:"};
    CHECK(region.get_or_create_multi(Keys{"a", "b"}, std::ref(again), short_lived) ==
          std::vector<std::string>{"w:a", "w:b"});
    CHECK(again.calls.size() == 1);
    f.clock.advance(66s);  // 5 s + 60 s grace: the items are gone
    CHECK_FALSE(f.backend->get(region.backend_key("a")).has_value());
  }

  TEST_CASE("should_cache: refused values are returned, not stored") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    Maker make{""};
    const auto values =
        region.get_or_create_multi(Keys{"keep", "drop"}, std::ref(make), CallOptions{},
                                   [](const std::string& v) { return v != "drop"; });
    CHECK(values == std::vector<std::string>{"keep", "drop"});
    CHECK(region.get<std::string>("keep") == "keep");
    CHECK_FALSE(region.get<std::string>("drop").has_value());
  }

  TEST_CASE("serve_stale_on_error: a throwing creator leaves every key its stale value") {
    dogpile::test::RegionFixture f;
    auto o = f.options();
    o.serve_stale_on_error = true;
    CacheRegion region(f.backend, o);
    region.set("a", std::string("old a"));
    region.set("b", std::string("old b"));
    f.clock.advance(11s);
    const auto values = region.get_or_create_multi(
        Keys{"a", "b"},
        [](auto) -> std::vector<std::string> { throw std::runtime_error("database down"); });
    CHECK(values == std::vector<std::string>{"old a", "old b"});
    CHECK(region.stats().creation_errors == 1);
    CHECK(f.errors_of(dogpile::ErrorKind::creator) == 1);
    // A key without a stale value: the exception reaches the caller.
    CHECK_THROWS_WITH_AS(region.get_or_create_multi(Keys{"a", "new"},
                                                    [](auto) -> std::vector<std::string> {
                                                      throw std::runtime_error("database down");
                                                    }),
                         "database down", std::runtime_error);
  }

  TEST_CASE("early recomputation: XFetch chooses keys of a batch, one creator call makes them") {
    dogpile::test::RegionFixture f;
    auto o = f.options(60s);
    o.early_recompute_beta = 1.0;
    o.random_seed = 7;
    CacheRegion region(f.backend, o);
    region.get_or_create_multi(Keys{"a", "b"}, [&](std::span<const std::string_view> keys) {
      f.clock.advance(10s);  // delta = 10 s
      return std::vector<std::string>(keys.size(), "first");
    });
    f.clock.advance(59s);  // 1 s before expiry, 0.1 delta: early with probability 0.9 each
    Maker make{"again:"};
    int early = 0;
    for (int i = 0; i < 20 && early == 0; ++i) {
      const auto values = region.get_or_create_multi(Keys{"a", "b"}, std::ref(make));
      for (const auto& v : values) early += v.starts_with("again:") ? 1 : 0;
    }
    CHECK(early >= 1);
    CHECK(region.stats().early_recomputes >= 1);
    CHECK(make.calls.size() == 1);  // both chosen keys in one call
  }

  TEST_CASE("background: the stale keys are returned at once, one job makes them") {
    dogpile::test::RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    CacheRegion region(f.backend, f.background(executor));
    region.set("a", std::string("old a"));
    region.set("b", std::string("old b"));
    f.clock.advance(11s);
    auto make = std::make_shared<std::atomic<int>>(0);
    const auto values = region.get_or_create_multi(
        Keys{"a", "b", "c"},
        [make](std::span<const std::string_view> keys) {
          make->fetch_add(1);
          std::vector<std::string> out;
          for (auto k : keys) out.push_back("new " + std::string(k));
          return out;
        },
        CallOptions{.background = true});
    // The missing key was made here; the stale ones were handed over.
    CHECK(values == std::vector<std::string>{"old a", "old b", "new c"});
    CHECK(make->load() == 1);
    CHECK(executor->queued() == 1);
    CHECK(executor->run_all() == 1);
    CHECK(make->load() == 2);
    CHECK(region.get<std::string>("a") == "new a");
    CHECK(region.get<std::string>("b") == "new b");
    CHECK(region.stats().background_refreshes == 2);
  }

  TEST_CASE("cached_multi regenerates in the background too, with its own copies of the ids") {
    dogpile::test::RegionFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    CacheRegion region(f.backend, f.background(executor));
    std::atomic<int> calls{0};
    auto names = dogpile::cached_multi(region, "name", [&](std::span<const int> ids) {
      calls.fetch_add(1);
      std::vector<std::string> out;
      for (int id : ids)
        out.push_back("name" + std::to_string(id) + "#" + std::to_string(calls.load()));
      return out;
    });
    {
      std::vector<int> ids{1, 2};
      CHECK(names(ids) == std::vector<std::string>{"name1#1", "name2#1"});
    }
    f.clock.advance(11s);
    {
      std::vector<int> ids{1, 2};
      CHECK(names(ids) == std::vector<std::string>{"name1#1", "name2#1"});  // stale, at once
    }  // the ids are gone before the job runs
    CHECK(executor->run_all() == 1);
    std::vector<int> ids{2, 1};
    CHECK(names(ids) == std::vector<std::string>{"name2#2", "name1#2"});
  }

  TEST_CASE("a deadline bounds the wait for keys another process is making") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());
    CacheRegion b(f.backend, f.options());
    std::atomic<bool> entered{false}, open{false};
    std::jthread holder([&] {
      a.get_or_create("slow", [&] {
        entered = true;
        eventually([&] { return open.load(); });
        return std::string("slow value");
      });
    });
    REQUIRE(eventually([&] { return entered.load(); }));
    std::atomic<bool> timed_out{false};
    std::jthread waiter([&] {
      try {
        b.get_or_create_multi(Keys{"fast", "slow"}, Maker{"b:"}, CallOptions{.deadline = 2s});
      } catch (const dogpile::WaitTimeout&) {
        timed_out = true;
      }
    });
    CHECK(f.advance_until([&] { return timed_out.load(); }, 100ms));
    waiter.join();
    CHECK(b.get<std::string>("fast") == "b:fast");  // made before the wait
    open = true;
  }

  TEST_CASE("creation durations come from the region's clock") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    region.get_or_create_multi(Keys{"a", "b"}, [&](std::span<const std::string_view> keys) {
      f.clock.advance(1500ms);
      return std::vector<std::string>(keys.size(), "v");
    });
    for (const char* key : {"a", "b"}) {
      const auto item = f.backend->get(region.backend_key(key));
      REQUIRE(item.has_value());
      const auto env = dogpile::detail::decode_envelope(item->data, item->flags);
      REQUIRE(env.envelope.has_value());
      CHECK(env.envelope->creation_duration == 1500ms);
      CHECK(env.envelope->created_at == f.clock.now());
    }
  }
}
