// SPDX-License-Identifier: MIT
// Calls that wait without a thread, meeting threads (run under
// ThreadSanitizer): a synchronous leader on another thread resumes the
// asynchronous followers of its flight; creators run off the loop.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <thread>

#include "async_loop.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"
#include "support.hpp"

using dogpile::CacheRegion;
using dogpile::test::eventually;
using dogpile::test::Gate;
using dogpile::test::Results;
using dogpile::test::start;
using dogpile::test::TestLoop;

TEST_SUITE("async threads") {
  TEST_CASE("a synchronous leader on another thread resumes the loop's followers, no request") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    TestLoop loop(f.clock);
    Gate gate;
    std::thread leader([&] { region.get_or_create("k", [&] { return gate.pass("v"); }); });
    REQUIRE(gate.wait_entered());
    Results results;
    const auto before = f.backend->counters();
    for (int i = 0; i < 1'000; ++i) start(region, loop, "k", f.creator("x"), results);
    loop.run();
    CHECK(results.ended() == 0);  // following the leader's flight
    gate.open = true;
    leader.join();  // its publish posted every follower's resumption
    loop.run();
    CHECK(results.values == 1'000);
    CHECK(std::all_of(results.seen.begin(), results.seen.end(),
                      [](const std::string& v) { return v == "v"; }));
    CHECK(f.creator_calls.load() == 0);
    // Each follower's one read; the leader's store and release.
    CHECK(f.since(before).gets == 1'000);
  }

  TEST_CASE("creators on threads of their own: 1,000 callers over 10 keys, one creation a key") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    Results results;
    {
      TestLoop loop(f.clock, true);
      for (int i = 0; i < 1'000; ++i) {
        const std::string key = "k" + std::to_string(i % 10);
        start(region, loop, key, f.creator("v"), results);
      }
      CHECK(eventually([&] {
        loop.run();
        return results.ended() == 1'000;
      }));
    }
    CHECK(results.values == 1'000);
    CHECK(f.creator_calls.load() == 10);
  }
}
