// SPDX-License-Identifier: MIT
// The asio binding (dogpile/asio.hpp): completion tokens — coroutines,
// callbacks, futures — on one I/O thread, creators on a pool, cancellation.
#include <doctest/doctest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <atomic>
#include <exception>
#include <optional>
#include <string>
#include <thread>

#include "dogpile/asio.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"
#include "support.hpp"

using dogpile::CacheRegion;
using dogpile::WaitTimeout;

namespace {
// The header's snippet (dogpile/asio.hpp), its lines unchanged.
int loads = 0;
std::string load_profile(int id) {
  ++loads;
  return "profile " + std::to_string(id);
}
// clang-format off
asio::awaitable<void> handle(dogpile::CacheRegion& users, int id) {
  std::string profile = co_await users.async_get_or_create(
      "user:" + std::to_string(id), [id] { return load_profile(id); },
      asio::use_awaitable);
}
// clang-format on

// A synchronous leader on a thread of its own holds `key`'s flight in
// `region` until this goes.
struct HeldFlight {
  HeldFlight(CacheRegion& region, const std::string& key)
      : leader(
            [&region, key, this] { region.get_or_create(key, [&] { return gate.pass("v"); }); }) {
    REQUIRE(gate.wait_entered());
  }
  ~HeldFlight() {
    gate.open = true;
    leader.join();
  }
  dogpile::test::Gate gate;
  std::thread leader;
};
}  // namespace

TEST_CASE("asio.hpp") {
  dogpile::test::RegionFixture f;
  CacheRegion users(f.backend, f.options());
  asio::io_context io;
  for (int i = 0; i < 3; ++i) asio::co_spawn(io, handle(users, 7), asio::detached);
  io.run();
  CHECK(loads == 1);
  CHECK(users.get<std::string>("user:7") == "profile 7");
}

TEST_SUITE("asio") {
  TEST_CASE("10,000 coroutines of one cold key on one I/O thread: one creation, all served") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    std::atomic<int> served{0};
    std::atomic<int> wrong{0};
    for (int i = 0; i < 10'000; ++i) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            const std::string v =
                co_await region.async_get_or_create("k", f.creator("v"), asio::use_awaitable);
            (v == "v" ? served : wrong).fetch_add(1);
          },
          asio::detached);
    }
    const auto io_thread = std::this_thread::get_id();
    io.run();  // returns once every call is done: nothing left pending on it
    CHECK(served.load() == 10'000);
    CHECK(wrong.load() == 0);
    CHECK(f.creator_calls.load() == 1);
    CHECK(region.stats().waited == 9'999);
    CHECK(std::this_thread::get_id() == io_thread);
  }

  TEST_CASE("callbacks and futures, and the creator never runs on the I/O thread") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    std::thread::id creator_thread;
    std::optional<std::string> got;
    region.async_get_or_create(
        "k",
        [&] {
          creator_thread = std::this_thread::get_id();
          return std::string("made");
        },
        asio::bind_executor(io, [&](std::exception_ptr error, std::string v) {
          if (!error) got = v;
        }));
    io.run();
    CHECK(got == "made");
    CHECK(creator_thread != std::thread::id());
    CHECK(creator_thread != std::this_thread::get_id());
    // use_future: the value, here fresh from the backend.
    auto future = region.async_get_or_create("k", f.creator("x"), asio::use_future);
    CHECK(future.get() == "made");
    // A creator's exception reaches the awaiting side.
    io.restart();
    std::exception_ptr failed;
    region.async_get_or_create(
        "other", []() -> std::string { throw std::runtime_error("db down"); },
        asio::bind_executor(io, [&](std::exception_ptr error, std::string) { failed = error; }));
    io.run();
    CHECK_THROWS_AS(std::rethrow_exception(failed), std::runtime_error);
  }

  TEST_CASE("asio's per-operation cancellation ends a wait: WaitTimeout (cancelled), no creation") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    std::optional<HeldFlight> held;
    held.emplace(region, "k");  // a synchronous leader elsewhere
    asio::cancellation_signal signal;
    std::exception_ptr ended;
    bool completed = false;
    region.async_get_or_create(
        "k", f.creator("x"),
        asio::bind_cancellation_slot(
            signal.slot(), asio::bind_executor(io, [&](std::exception_ptr e, std::string) {
              ended = e;
              completed = true;
            })));
    io.poll();
    CHECK_FALSE(completed);  // following the leader
    signal.emit(asio::cancellation_type::terminal);
    io.run();
    REQUIRE(completed);
    try {
      std::rethrow_exception(ended);
    } catch (const WaitTimeout& e) {
      CHECK(e.reason() == WaitTimeout::Reason::cancelled);
    } catch (...) {
      FAIL("not a WaitTimeout");
    }
    held.reset();
    CHECK(f.creator_calls.load() == 0);
  }

  TEST_CASE("a follower whose deadline passes leaves nothing that keeps the I/O context busy") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    HeldFlight held(region, "k");
    std::exception_ptr ended;
    region.async_get_or_create(
        "k", f.creator("x"), dogpile::CallOptions{.deadline = std::chrono::milliseconds(20)},
        asio::bind_executor(io, [&](std::exception_ptr e, std::string) { ended = e; }));
    // run() returns once the follower is done, while the leader still creates.
    io.run_for(std::chrono::seconds(10));
    CHECK(io.stopped());
    REQUIRE(ended);
    CHECK_THROWS_AS(std::rethrow_exception(ended), WaitTimeout);
    CHECK_FALSE(held.gate.open.load());  // the leader still creates
  }
}
