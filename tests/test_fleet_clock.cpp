// SPDX-License-Identifier: MIT
// The fleet clock (internal): this host's clock corrected to a server's, from
// samples of the server's time at a coarse resolution; narrowed by samples at
// different phases of the server's second; reset when a clock is stepped.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>

#include "clock_server.hpp"
#include "dogpile/memory.hpp"
#include "engine/fleet_clock.hpp"

using namespace std::chrono_literals;
using dogpile::Duration;
using dogpile::ManualClock;
using dogpile::TimePoint;
using dogpile::detail::FleetClock;
using dogpile::test::ClockServer;

namespace {

double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

TEST_SUITE("fleet clock") {
  TEST_CASE("an exact server clock: the offset is measured exactly, ahead or behind") {
    for (Duration skew : {Duration(600s), Duration(-600s), Duration(0s)}) {
      ManualClock server;
      ManualClock local(server.now() + skew);
      ClockServer backend(server, Duration::zero());
      FleetClock fleet(local, backend, "ref", 10s);
      CHECK(fleet.offset() == Duration::zero());  // not measured yet
      fleet.ensure_measured();
      CHECK(backend.samples.load() == 1);
      CHECK(fleet.offset() == -skew);
      CHECK(fleet.now() == server.now());
      fleet.ensure_measured();  // measured: no further request
      CHECK(backend.samples.load() == 1);
    }
  }

  // memcached's one-second clock lags real time by its tick's phase, which
  // no host can see; a host ten minutes off takes the server's clock moved on
  // by half a tick. This model server ticks on whole seconds (phase 0), so
  // the estimate ends half a second ahead of it, to within a millisecond.
  TEST_CASE(
      "a one-second server clock: within its tick at first, its tick's middle after bisection") {
    ManualClock server(ManualClock::default_start() + 370ms);  // some phase within its second
    ManualClock local(server.now() - 600s);                    // this host is 10 minutes behind
    ClockServer backend(server, 1s);
    FleetClock fleet(local, backend, "ref", 10s);
    fleet.ensure_measured();
    const double first = seconds(fleet.now() - server.now());
    MESSAGE("one sample: off by " << first << " s");
    CHECK(first >= 0);
    CHECK(first <= 1.0);
    CHECK(fleet.doubt() > 400ms);  // judged with care meanwhile
    // The refining chore: a sample after each next_delay(), until renewals
    // (about every clock_sync) take over.
    int samples = 1;
    Duration elapsed{};
    double after_sweep = 0;
    while (*fleet.next_delay() < 5s) {
      const auto d = *fleet.next_delay();
      server.advance(d);
      local.advance(d);
      elapsed += d;
      REQUIRE(fleet.sample());
      if (++samples == 11) after_sweep = seconds(fleet.uncertainty());
    }
    const double refined = seconds(fleet.now() - server.now());
    MESSAGE("after the sweep: uncertainty "
            << after_sweep << " s; after " << samples << " samples over " << seconds(elapsed)
            << " s: off by " << refined << " s, uncertainty " << seconds(fleet.uncertainty())
            << " s");
    CHECK(after_sweep <= 0.06);
    CHECK(std::abs(refined - 0.5) <= 0.002);
    CHECK(fleet.doubt() <= 5ms);
    CHECK(fleet.uncertainty() <= 5ms);  // the drift allowance between samples keeps it open
    CHECK(*fleet.next_delay() >= 7s);   // then renewed about every clock_sync (10 s)
  }

  TEST_CASE(
      "a host in step with a one-second server clock keeps its own time from the first call") {
    for (Duration phase : {Duration(0ms), Duration(370ms), Duration(999ms)}) {
      CAPTURE(seconds(phase));
      ManualClock local(ManualClock::default_start() + phase);
      // memcached's clock lags real time by up to its tick.
      ManualClock server(local.now() - 400ms);
      ClockServer backend(server, 1s);
      FleetClock fleet(local, backend, "ref", 10s);
      fleet.ensure_measured();
      CHECK(fleet.now() == local.now());
      CHECK(fleet.doubt() == Duration::zero());
      CHECK(fleet.latest() == fleet.earliest());
    }
    // Two seconds off is out of step: corrected.
    ManualClock local;
    ManualClock server(local.now() + 2s);
    ClockServer backend(server, 1s);
    FleetClock fleet(local, backend, "ref", 10s);
    fleet.ensure_measured();
    CHECK(fleet.offset() > 1s);
    CHECK(fleet.doubt() > Duration::zero());
  }

  TEST_CASE(
      "a stepped clock: the next sample disagrees with the bounds, and measuring starts over") {
    ManualClock server;
    ManualClock local(server.now() + 30s);
    ClockServer backend(server, Duration::zero());
    FleetClock fleet(local, backend, "ref", 10s);
    fleet.ensure_measured();
    CHECK(fleet.now() == server.now());
    local.advance(-45s);  // an operator (or NTP) steps this host's clock back
    CHECK(fleet.now() != server.now());
    REQUIRE(fleet.sample());
    CHECK(fleet.now() == server.now());
  }

  TEST_CASE("no server clock: the local clock, and no chore") {
    ManualClock local;
    dogpile::MemoryBackend memory;  // has one; a plain Backend does not
    dogpile::test::NoStore plain;   // no server clock
    FleetClock fleet(local, plain, "ref", 10s);
    fleet.ensure_measured();
    CHECK(fleet.now() == local.now());
    CHECK_FALSE(fleet.next_delay().has_value());
    FleetClock off(local, memory, "ref", std::nullopt);  // clock_sync = nullopt
    off.ensure_measured();
    CHECK(off.now() == local.now());
    CHECK_FALSE(off.next_delay().has_value());
  }

  TEST_CASE("a server away: calls go on with the local clock, retried a second later, backed off") {
    ManualClock server;
    ManualClock local(server.now() + 600s);
    ClockServer backend(server, Duration::zero());
    backend.fail = true;
    FleetClock fleet(local, backend, "ref", 10s);
    fleet.ensure_measured();
    fleet.ensure_measured();
    CHECK(backend.samples.load() == 1);  // not again on the call path within a second
    CHECK(fleet.now() == local.now());
    std::string error;
    CHECK_FALSE(fleet.sample(&error));
    CHECK(error == "server away");
    CHECK(*fleet.next_delay() >= 2s);  // the chore backs off
    backend.fail = false;
    local.advance(1s);
    server.advance(1s);
    fleet.ensure_measured();
    CHECK(fleet.now() == server.now());
  }
}
