// SPDX-License-Identifier: MIT
// The memory of locks held elsewhere (internal): remembered until a time,
// forgotten on demand, bounded in size.
#include <doctest/doctest.h>

#include <string>

#include "engine/held_elsewhere.hpp"

using namespace std::chrono_literals;
using dogpile::SteadyTime;
using dogpile::detail::HeldElsewhere;

TEST_SUITE("held elsewhere") {
  TEST_CASE("a key is held until the time remembered, or until forgotten") {
    HeldElsewhere held;
    const SteadyTime t0{};
    CHECK_FALSE(held.held("k", t0));
    held.remember("k", t0 + 100ms);
    CHECK(held.held("k", t0));
    CHECK(held.held("k", t0 + 99ms));
    CHECK_FALSE(held.held("k", t0 + 100ms));  // and dropped
    CHECK(held.size() == 0);
    held.remember("k", t0 + 1s);
    held.forget("k");
    CHECK_FALSE(held.held("k", t0));
  }

  TEST_CASE("bounded: a full shard drops what ends first") {
    HeldElsewhere held;
    const SteadyTime t0{};
    const std::size_t n = HeldElsewhere::kShards * HeldElsewhere::kCapacity * 4;
    for (std::size_t i = 0; i < n; ++i) {
      held.remember("key" + std::to_string(i), t0 + std::chrono::milliseconds(i));
    }
    CHECK(held.size() <= HeldElsewhere::kShards * HeldElsewhere::kCapacity);
    CHECK(held.held("key" + std::to_string(n - 1), t0));  // the latest stays
  }
}
