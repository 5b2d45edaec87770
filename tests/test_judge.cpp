// SPDX-License-Identifier: MIT
// Judging a stored value, and the invalidation record (internal).
#include <doctest/doctest.h>

#include "engine/invalidation.hpp"
#include "engine/judge.hpp"
#include "format/keys.hpp"

using namespace std::chrono_literals;
using dogpile::RegionOptions;
using dogpile::TimePoint;
using dogpile::detail::EnvelopeView;
using dogpile::detail::Found;
using dogpile::detail::InvalidationTimes;
using dogpile::detail::Judge;

namespace {

const TimePoint kNow = dogpile::ManualClock::default_start();

std::int64_t micros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

EnvelopeView created(TimePoint at, std::chrono::microseconds took = 0us) {
  return EnvelopeView{at, took, "payload"};
}

}  // namespace

TEST_SUITE("judge") {
  TEST_CASE("fresh up to the expiration, stale for the grace, then missing") {
    RegionOptions o;
    o.stale_grace = 60s;
    Judge judge(o);
    const dogpile::Expiration ten = 10s;
    const InvalidationTimes none;
    CHECK(judge.judge(created(kNow - 10s), kNow, ten, none, true) == Found::fresh);
    CHECK(judge.judge(created(kNow - 11s), kNow, ten, none, true) == Found::stale);
    CHECK(judge.judge(created(kNow - 70s), kNow, ten, none, true) == Found::stale);
    CHECK(judge.judge(created(kNow - 71s), kNow, ten, none, true) == Found::missing);
    CHECK(judge.judge(created(kNow - 1000h), kNow, dogpile::no_expiration, none, true) ==
          Found::fresh);
  }

  TEST_CASE("a value from more than 2 s in the future is not trusted to be fresh") {
    Judge judge(RegionOptions{});
    const dogpile::Expiration hour = 1h;
    const InvalidationTimes none;
    CHECK(judge.judge(created(kNow + 2s), kNow, hour, none, true) == Found::fresh);
    CHECK(judge.judge(created(kNow + 3s), kNow, hour, none, true) == Found::stale);
    CHECK(judge.judge(created(kNow + 600s), kNow, hour, none, true) == Found::stale);
  }

  TEST_CASE("invalidations compare with when the creation started") {
    Judge judge(RegionOptions{});
    const dogpile::Expiration hour = 1h;
    InvalidationTimes hard;
    hard.hard = micros(kNow - 5s);
    CHECK(judge.judge(created(kNow - 6s), kNow, hour, hard, true) == Found::missing);
    CHECK(judge.judge(created(kNow - 4s), kNow, hour, hard, true) == Found::fresh);
    // Finished after the invalidation, but started (2 s of creation) before it.
    CHECK(judge.judge(created(kNow - 4s, 2'000'000us), kNow, hour, hard, true) == Found::missing);
    InvalidationTimes soft;
    soft.soft = micros(kNow - 5s);
    CHECK(judge.judge(created(kNow - 6s), kNow, hour, soft, true) == Found::stale);
  }

  TEST_CASE("the invalidation record is bound to its key") {
    InvalidationTimes t;
    t.hard = 1;
    t.soft = 2;
    const auto check = dogpile::detail::key_check("region#inv");
    const dogpile::Item item = t.encode(check);
    CHECK(item.data.size() == 24);
    const auto back = InvalidationTimes::decode(item, check);
    REQUIRE(back.has_value());
    CHECK(back->hard == 1);
    CHECK(back->soft == 2);
    CHECK_FALSE(InvalidationTimes::decode(item, dogpile::detail::key_check("other#inv")));
    dogpile::Item v1{item.data.substr(0, 16), 0x64704901};  // dogpile 0.1's record
    CHECK_FALSE(InvalidationTimes::decode(v1, check));
  }
}
