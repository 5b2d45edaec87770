// SPDX-License-Identifier: MIT
// Every time to live a region gives its backend, from its options (internal).
#include <doctest/doctest.h>

#include "engine/lifetimes.hpp"

using namespace std::chrono_literals;
using dogpile::RegionOptions;
using dogpile::Ttl;
using dogpile::detail::Lifetimes;

TEST_SUITE("lifetimes") {
  TEST_CASE("an item lives its expiration and stale grace, rounded up to whole seconds") {
    RegionOptions o;
    o.stale_grace = 60s;
    const Lifetimes life(o);
    CHECK(life.item(dogpile::Expiration(10s)) == 70s);
    CHECK(life.item(dogpile::Expiration(10500ms)) == 71s);
    CHECK(life.item(dogpile::no_expiration) == 0s);  // memcached: never expires
    o.stale_grace = 0s;
    CHECK(Lifetimes(o).item(dogpile::Expiration(100ms)) == 1s);  // never 0: that is "forever"
  }

  TEST_CASE("a tombstone outlives any creation that began before it, within memcached's 30 days") {
    RegionOptions o;
    o.lock_timeout = 30s;
    o.max_creation = 5min;
    CHECK(Lifetimes(o).tombstone() == 330s);
    o.max_creation = std::nullopt;  // a creator may run for ever: a day
    CHECK(Lifetimes(o).tombstone() == 24h + 30s);
    o.max_creation = 40 * 24h;
    CHECK(Lifetimes(o).tombstone() == Ttl(30 * 24h));
  }

  TEST_CASE("the lease, the refresh window and a value marked stale") {
    RegionOptions o;
    o.lock_timeout = 30s;
    o.stale_grace = 1500ms;
    const Lifetimes life(o);
    CHECK(life.lease() == 30s);
    CHECK(life.refresh_below() == 2s);
    CHECK(life.marked_stale() == 30s);  // at least a lease
    o.stale_grace = 5min;
    CHECK(Lifetimes(o).marked_stale() == 300s);  // as a stale value lives
    CHECK(life.release_retries() == 30s);
  }

  TEST_CASE("copies for outages live as the backend's item would, a day without an expiration") {
    RegionOptions o;
    o.stale_grace = 60s;
    const Lifetimes life(o);
    CHECK(life.kept(dogpile::Expiration(10s)) == 70s);
    CHECK(life.kept(dogpile::no_expiration) == 24h);
  }

  TEST_CASE("a lease known held elsewhere is remembered about as long as a creation takes") {
    RegionOptions o;
    o.lock_timeout = 30s;
    const Lifetimes life(o);
    CHECK(life.held_elsewhere(0us) == 100ms);
    CHECK(life.held_elsewhere(std::chrono::microseconds(2s)) == 2s);
    CHECK(life.held_elsewhere(std::chrono::microseconds(10min)) == 30s);
  }
}
