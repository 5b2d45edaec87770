// SPDX-License-Identifier: MIT
// In-process flights (internal): one leader per key, followers get its
// result, its exception, or start over; followers' waits end at their
// deadline or stop token; a flight can be detached from outside.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "engine/flight.hpp"
#include "processes.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::Item;
using dogpile::ManualClock;
using dogpile::SteadyTime;
using dogpile::detail::FlightTable;
using dogpile::test::eventually;

TEST_SUITE("flight") {
  TEST_CASE("the first caller leads, the next follow and receive the published item") {
    FlightTable table;
    ManualClock clock;
    auto [flight, lead] = table.join("k");
    REQUIRE(lead.has_value());
    auto [same, none] = table.join("k");
    CHECK_FALSE(none.has_value());
    CHECK(same == flight);
    CHECK_FALSE(table.try_lead("k").has_value());
    CHECK(table.size() == 1);
    lead->publish(std::make_shared<const Item>(Item{"v", 1}));
    CHECK(table.size() == 0);  // gone before its followers wake
    const auto result = same->wait(clock, SteadyTime::max(), {});
    REQUIRE(result.has_value());
    REQUIRE(result->item != nullptr);
    CHECK(result->item->data == "v");
    CHECK(table.join("k").second.has_value());  // a later caller starts afresh
  }

  TEST_CASE("an exception reaches the followers, and a leader that leaves abandons the flight") {
    FlightTable table;
    ManualClock clock;
    {
      auto [flight, lead] = table.join("k");
      auto follower = table.join("k").first;
      lead->fail(std::make_exception_ptr(std::runtime_error("boom")));
      const auto result = follower->wait(clock, SteadyTime::max(), {});
      REQUIRE(result.has_value());
      CHECK_THROWS_WITH_AS(std::rethrow_exception(result->error), "boom", std::runtime_error);
    }
    std::shared_ptr<dogpile::detail::Flight> follower;
    {
      auto [flight, lead] = table.join("k");
      follower = table.join("k").first;
    }  // the Lead goes without a result
    const auto result = follower->wait(clock, SteadyTime::max(), {});
    REQUIRE(result.has_value());
    CHECK(result->item == nullptr);
    CHECK(result->error == nullptr);  // abandoned: start over
    CHECK(table.size() == 0);
  }

  TEST_CASE("a follower's wait ends at its deadline on the clock, or when stopped") {
    FlightTable table;
    ManualClock clock;
    auto [flight, lead] = table.join("k");
    std::atomic<bool> timed_out{false};
    std::jthread waiter(
        [&] { timed_out = !flight->wait(clock, clock.steady_now() + 5s, {}).has_value(); });
    REQUIRE(eventually([&] { return clock.waiters() == 1; }));
    clock.advance(4s);
    CHECK_FALSE(timed_out.load());
    clock.advance(1s);
    waiter.join();
    CHECK(timed_out.load());

    std::stop_source stop;
    std::atomic<bool> stopped{false};
    std::jthread cancelled(
        [&] { stopped = !flight->wait(clock, SteadyTime::max(), stop.get_token()).has_value(); });
    stop.request_stop();
    cancelled.join();
    CHECK(stopped.load());
    lead->publish(nullptr);
  }

  TEST_CASE("detach: followers start over, a new flight may start, the late result goes nowhere") {
    FlightTable table;
    ManualClock clock;
    auto [flight, lead] = table.join("k");
    auto follower = table.join("k").first;
    table.detach("k", flight);
    const auto result = follower->wait(clock, SteadyTime::max(), {});
    REQUIRE(result.has_value());
    CHECK(result->item == nullptr);
    auto [next, next_lead] = table.join("k");
    REQUIRE(next_lead.has_value());
    CHECK(next != flight);
    lead->publish(std::make_shared<const Item>(Item{"late", 0}));  // the hung leader finishes
    CHECK(table.size() == 1);                                      // the new flight is still there
    CHECK_FALSE(flight->complete({}));                             // completed once, by detach
  }

  TEST_CASE("after fork(), the child forgets every flight of the parent") {
    FlightTable table;
    auto [flight, lead] = table.join("k");  // led by this thread, which the child lacks
    const pid_t child = dogpile::test::fork_worker([&] {
      table.reset_after_fork();  // what the region does in the child
      if (table.size() != 0) return 10;
      return table.join("k").second.has_value() ? 0 : 11;
    });
    CHECK(dogpile::test::wait_worker_within(child, 30s) == 0);
    CHECK(table.size() == 1);  // the parent's flight is still its own
  }
}
