// SPDX-License-Identifier: MIT
// CacheRegion under concurrency, with exact counts. Threads start together
// (std::latch) and wait for observable states (counters), never for time.
// Two regions over one MemoryBackend stand for two processes sharing a server.
#include <doctest/doctest.h>

#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "backends.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Outcome;
using dogpile::RegionOptions;
using dogpile::test::eventually;

namespace {

constexpr int kThreads = 16;
using dogpile::test::RegionFixture;
using dogpile::test::run_together;

}  // namespace

TEST_SUITE("region threads") {
  TEST_CASE("cold key: one creator, the others wait and get its value without the backend") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options());
    std::atomic<int> creators{0};
    std::atomic<int> waited{0};
    run_together(kThreads, [&](int) {
      Outcome outcome{};
      const auto v = region.get_or_create(
          "cold",
          [&] {
            creators.fetch_add(1);
            // Hold the creation until every other caller is waiting on it.
            CHECK(eventually([&] { return region.stats().lock_waits == kThreads - 1; }));
            return std::string("value");
          },
          &outcome);
      CHECK(v == "value");
      if (outcome == Outcome::waited) waited.fetch_add(1);
    });
    CHECK(creators == 1);
    CHECK(waited == kThreads - 1);
    const auto c = f.backend->counters();
    CHECK(c.gets == kThreads);  // one read per caller
    CHECK(c.get_multis == 1);   // the leader's re-read under the lock
    CHECK(c.adds == 2);         // the lock, and the value (fenced: into the empty key)
    CHECK(c.lock_releases == 1);
    const auto s = region.stats();
    CHECK(s.created == 1);
    CHECK(s.waited == kThreads - 1);
    CHECK(s.misses == kThreads);
  }

  TEST_CASE("stale key: one creator, no one else waits for it") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options());
    region.get_or_create("hot", [] { return std::string("old"); });
    f.clock.advance(11s);
    std::atomic<int> creators{0};
    std::atomic<int> returned_stale{0};
    run_together(kThreads, [&](int) {
      Outcome outcome{};
      const auto v = region.get_or_create(
          "hot",
          [&] {
            creators.fetch_add(1);
            // The creation ends only after all others have returned: had any
            // of them waited for it, this would never happen.
            CHECK(eventually([&] { return returned_stale.load() == kThreads - 1; }));
            return std::string("new");
          },
          &outcome);
      if (outcome == Outcome::stale) {
        CHECK(v == "old");
        returned_stale.fetch_add(1);
      } else {
        CHECK(outcome == Outcome::created);
        CHECK(v == "new");
      }
    });
    CHECK(creators == 1);
    CHECK(returned_stale == kThreads - 1);
    CHECK(region.get<std::string>("hot") == "new");
  }

  TEST_CASE("a creator's exception reaches its caller and every caller waiting on it") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options());
    std::atomic<int> creators{0};
    std::atomic<int> failed{0};
    run_together(kThreads, [&](int) {
      try {
        region.get_or_create("boom", [&]() -> std::string {
          creators.fetch_add(1);
          CHECK(eventually([&] { return region.stats().lock_waits == kThreads - 1; }));
          throw std::runtime_error("creator failed");
        });
      } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()) == "creator failed");
        failed.fetch_add(1);
      }
    });
    CHECK(creators == 1);
    CHECK(failed == kThreads);
    CHECK(f.backend->size() == 0);  // nothing stored, no lock left
    CHECK(region.get_or_create("boom", [] { return std::string("ok"); }) == "ok");
  }

  TEST_CASE("two processes, cold key: the second waits for the first's value") {
    RegionFixture f;
    auto o = f.options();
    o.wait.max_poll = 2ms;
    CacheRegion a(f.backend, o);
    CacheRegion b(f.backend, o);
    std::atomic<bool> release_creator{false};
    std::atomic<int> creators{0};
    std::jthread holder([&] {
      a.get_or_create("k", [&] {
        creators.fetch_add(1);
        CHECK(eventually([&] { return release_creator.load(); }));
        return std::string("from a");
      });
    });
    REQUIRE(eventually([&] { return creators.load() == 1; }));
    std::atomic<int> waited{0};
    {
      std::vector<std::jthread> callers;
      for (int i = 0; i < 8; ++i) {
        callers.emplace_back([&] {
          Outcome outcome{};
          CHECK(b.get_or_create(
                    "k",
                    [&] {
                      creators.fetch_add(1);
                      return std::string("from b");
                    },
                    &outcome) == "from a");
          if (outcome == Outcome::waited) waited.fetch_add(1);
        });
      }
      // One of b's callers polls the backend; the other seven wait on it.
      REQUIRE(eventually([&] { return b.stats().lock_waits == 8; }));
      release_creator = true;
      // The poller sees the value at its next poll, when its pause is over.
      CHECK(f.advance_until([&] { return b.stats().waited == 8; }, 1ms));
    }
    CHECK(waited == 8);
    CHECK(creators == 1);
  }

  TEST_CASE("two processes, stale key: the second serves stale while the first regenerates") {
    RegionFixture f;
    CacheRegion a(f.backend, f.options());
    CacheRegion b(f.backend, f.options());
    a.get_or_create("k", [] { return std::string("old"); });
    f.clock.advance(11s);
    std::atomic<bool> release_creator{false};
    std::atomic<int> creators{0};
    std::jthread holder([&] {
      a.get_or_create("k", [&] {
        creators.fetch_add(1);
        CHECK(eventually([&] { return release_creator.load(); }));
        return std::string("new");
      });
    });
    REQUIRE(eventually([&] { return creators.load() == 1; }));
    run_together(kThreads, [&](int) {
      Outcome outcome{};
      CHECK(b.get_or_create(
                "k",
                [&] {
                  creators.fetch_add(1);
                  return std::string("from b");
                },
                &outcome) == "old");
      CHECK(outcome == Outcome::stale);
    });
    release_creator = true;
    holder.join();
    CHECK(creators == 1);
    CHECK(b.get<std::string>("k") == "new");
    // At most one of b's callers asked the backend for the lock; the rest saw
    // b's own flight and did not.
    CHECK(b.stats().stale_served == kThreads);
  }

  TEST_CASE("backend down: the callers of one process still share one creation") {
    RegionFixture f;
    auto faulty = std::make_shared<dogpile::test::FaultyBackend>(f.backend);
    faulty->fail_everything(true);
    CacheRegion region(faulty, f.options());
    std::atomic<int> creators{0};
    run_together(kThreads, [&](int) {
      CHECK(region.get_or_create("k", [&] {
        creators.fetch_add(1);
        CHECK(eventually([&] { return region.stats().lock_waits == kThreads - 1; }));
        return std::string("v");
      }) == "v");
    });
    CHECK(creators == 1);
    CHECK(region.stats().degraded == 1);
  }

  TEST_CASE("get_or_create_multi from many threads over overlapping keys: each key made once") {
    RegionFixture f;
    CacheRegion region(f.backend, f.options());
    std::mutex made_mutex;
    std::map<std::string, int> made;
    run_together(8, [&](int i) {
      std::vector<std::string> keys;
      for (int k = 0; k < 6; ++k) keys.push_back("key" + std::to_string((i + k) % 10));
      const auto values =
          region.get_or_create_multi(keys, [&](std::span<const std::string_view> missing) {
            std::vector<std::string> out;
            std::lock_guard lock(made_mutex);
            for (auto k : missing) {
              ++made[std::string(k)];
              out.push_back("v:" + std::string(k));
            }
            return out;
          });
      for (std::size_t j = 0; j < keys.size(); ++j) CHECK(values[j] == "v:" + keys[j]);
    });
    CHECK(made.size() == 10);
    for (const auto& [key, times] : made) CHECK_MESSAGE(times == 1, key);
  }
}
