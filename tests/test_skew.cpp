// SPDX-License-Identifier: MIT
// One clock (SPEC I4): hosts whose clocks disagree by up to ten minutes judge
// freshness and invalidations alike, because every time they stamp or judge
// is taken on the fleet clock (the server's). Here the MemoryBackend's clock
// is the server's; region `ahead` runs 10 minutes fast, `behind` 10 minutes
// slow; all three clocks move together.
#include <doctest/doctest.h>

#include <string>

#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Invalidation;
using dogpile::ManualClock;
using dogpile::Outcome;

namespace {

struct Skewed : dogpile::test::RegionFixture {
  ManualClock ahead_clock{clock.now() + 600s};
  ManualClock behind_clock{clock.now() - 600s};

  dogpile::RegionOptions on(ManualClock& c, bool sync = true) {
    auto o = options(5s);
    o.clock = &c;
    o.clock_sync = sync ? std::optional<dogpile::Duration>(10s) : std::nullopt;
    return o;
  }
  void advance(dogpile::Duration d) {
    clock.advance(d);
    ahead_clock.advance(d);
    behind_clock.advance(d);
  }
};

}  // namespace

TEST_SUITE("clock skew") {
  TEST_CASE("a value written by a host 10 minutes ahead is fresh for its expiration, not longer") {
    Skewed f;
    CacheRegion ahead(f.backend, f.on(f.ahead_clock));
    CacheRegion behind(f.backend, f.on(f.behind_clock));
    ahead.get_or_create("k", f.creator("v"));
    CHECK(ahead.clock_offset() == -600s);
    f.advance(4900ms);
    auto meta = behind.get_value_metadata<std::string>("k");
    REQUIRE(meta.has_value());
    CHECK(meta->fresh);
    CHECK(behind.clock_offset() == 600s);
    f.advance(200ms);  // 5.1 s after it was made: stale for every host
    meta = behind.get_value_metadata<std::string>("k");
    REQUIRE(meta.has_value());
    CHECK_FALSE(meta->fresh);
    CHECK_FALSE(ahead.get<std::string>("k").has_value());
  }

  TEST_CASE("two hosts 20 minutes apart create once per expiration, not once per call") {
    for (bool sync : {true, false}) {
      CAPTURE(sync);
      Skewed f;
      CacheRegion ahead(f.backend, f.on(f.ahead_clock, sync));
      CacheRegion behind(f.backend, f.on(f.behind_clock, sync));
      for (int second = 0; second < 60; ++second) {
        (second % 2 == 0 ? ahead : behind).get_or_create("k", f.creator("v"));
        (second % 2 == 0 ? behind : ahead).get_or_create("k", f.creator("v"));
        f.advance(1s);
      }
      MESSAGE("clock_sync " << std::string(sync ? "on" : "off") << ": " << f.creator_calls.load()
                            << " creations in 60 s, 120 calls, expiration 5 s");
      if (sync) {
        CHECK(f.creator_calls.load() <= 13);  // one per 5 s (created at 0, 6, 12, ...)
      } else {
        CHECK(f.creator_calls.load() >= 60);  // the herd this prevents: one per call or so
      }
    }
  }

  TEST_CASE("invalidations from either host apply to what was made before them, not after") {
    for (bool from_ahead : {true, false}) {
      for (Invalidation kind : {Invalidation::hard, Invalidation::soft}) {
        CAPTURE(from_ahead);
        CAPTURE(kind == Invalidation::hard);
        Skewed f;
        auto o_ahead = f.on(f.ahead_clock);
        auto o_behind = f.on(f.behind_clock);
        o_ahead.expiration = o_behind.expiration = 1h;
        o_ahead.invalidation_check = o_behind.invalidation_check = 1s;
        CacheRegion ahead(f.backend, o_ahead);
        CacheRegion behind(f.backend, o_behind);
        CacheRegion& invalidator = from_ahead ? ahead : behind;
        CacheRegion& reader = from_ahead ? behind : ahead;
        reader.set("before", std::string("old"));
        invalidator.set("before too", std::string("old"));
        f.advance(1s);
        invalidator.invalidate(kind);
        f.advance(1s);
        reader.set("after", std::string("new"));
        f.advance(1s);  // past the reader's check interval
        for (CacheRegion* region : {&ahead, &behind}) {
          auto before = region->get_value_metadata<std::string>("before");
          auto before_too = region->get_value_metadata<std::string>("before too");
          auto after = region->get_value_metadata<std::string>("after");
          if (kind == Invalidation::hard) {
            CHECK_FALSE(before.has_value());
            CHECK_FALSE(before_too.has_value());
          } else {
            REQUIRE(before.has_value());
            REQUIRE(before_too.has_value());
            CHECK_FALSE(before->fresh);
            CHECK_FALSE(before_too->fresh);
          }
          REQUIRE(after.has_value());
          CHECK(after->fresh);
        }
      }
    }
  }
}
