// SPDX-License-Identifier: MIT
// The asio binding (dogpile/asio.hpp): completion tokens — coroutines,
// callbacks, futures — on one I/O thread, creators on a pool, cancellation.
#include <doctest/doctest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <atomic>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "dogpile/asio.hpp"
#include "dogpile/cached.hpp"
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
    // A second follower, not cancelled: woken once the leader is done
    // (after the first, whose call is gone by then).
    std::optional<std::string> second;
    region.async_get_or_create("k", f.creator("x"),
                               asio::bind_executor(io, [&](std::exception_ptr e, std::string v) {
                                 if (!e) second = v;
                               }));
    io.poll();
    CHECK_FALSE(completed);  // following the leader
    signal.emit(asio::cancellation_type::terminal);
    io.poll();
    REQUIRE(completed);
    try {
      std::rethrow_exception(ended);
    } catch (const WaitTimeout& e) {
      CHECK(e.reason() == WaitTimeout::Reason::cancelled);
    } catch (...) {
      FAIL("not a WaitTimeout");
    }
    CHECK_FALSE(second);
    held.reset();
    io.run();
    CHECK(second == "v");
    CHECK(f.creator_calls.load() == 0);
  }

  TEST_CASE("a completion handler that throws leaves by run(), the other nine served") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    int served = 0;
    {
      HeldFlight held(region, "k");
      for (int i = 0; i < 10; ++i) {
        region.async_get_or_create(
            "k", f.creator("x"),
            asio::bind_executor(io, [&, i](std::exception_ptr error, const std::string& v) {
              if (i == 3) throw std::runtime_error("from a handler");
              if (!error && v == "v") ++served;
            }));
      }
      (void)io.poll();
      REQUIRE(region.stats().lock_waits == 10);
    }  // the leader publishes
    int thrown = 0;
    for (int round = 0; round < 3; ++round) {
      try {
        io.run();
        break;
      } catch (const std::runtime_error&) {
        ++thrown;
        io.restart();
      }
    }
    CHECK(thrown == 1);
    CHECK(served == 9);
    CHECK(region.stats().waited == 10);
    CHECK(f.creator_calls.load() == 0);
  }

  TEST_CASE("followers bound to a strand are woken and completed on it") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    auto strand = asio::make_strand(io);
    int on_strand = 0;
    int elsewhere = 0;
    {
      HeldFlight held(region, "k");
      for (int i = 0; i < 10; ++i) {
        region.async_get_or_create(
            "k", f.creator("x"),
            asio::bind_executor(i % 2 == 0 ? strand : asio::make_strand(io),
                                [&, i](std::exception_ptr error, const std::string& v) {
                                  const bool in = i % 2 != 0 || strand.running_in_this_thread();
                                  ((!error && v == "v" && in) ? on_strand : elsewhere) += 1;
                                }));
      }
      (void)io.poll();
      REQUIRE(region.stats().lock_waits == 10);
    }
    io.run();
    CHECK(on_strand == 10);
    CHECK(elsewhere == 0);
  }

  TEST_CASE("a deferred async_get_or_create launched twice: two calls, each completed once") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    const auto op = region.async_get_or_create("k", f.creator("v"), asio::experimental::deferred);
    std::vector<std::string> got;
    auto keep = [&](std::exception_ptr error, std::string v) {
      if (!error) got.push_back(v);
    };
    op(asio::bind_executor(io, keep));
    op(asio::bind_executor(io, keep));
    io.run();
    CHECK(got == std::vector<std::string>{"v", "v"});
    CHECK(f.creator_calls.load() == 1);
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

  TEST_CASE("a coroutine creator runs on the I/O thread: 1,000 callers, one creation") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    std::atomic<int> served{0};
    std::thread::id creator_thread;
    auto creator = [&]() -> asio::awaitable<std::string> {
      creator_thread = std::this_thread::get_id();
      f.creator_calls.fetch_add(1);
      // Gives the I/O thread back several times while it "works".
      for (int i = 0; i < 3; ++i) co_await asio::post(io, asio::use_awaitable);
      co_return std::string("made");
    };
    for (int i = 0; i < 1'000; ++i) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            if (co_await region.async_get_or_create("k", creator, asio::use_awaitable) == "made") {
              served.fetch_add(1);
            }
          },
          asio::detached);
    }
    io.run();
    CHECK(served.load() == 1'000);
    CHECK(f.creator_calls.load() == 1);
    CHECK(creator_thread == std::this_thread::get_id());
    CHECK(region.get<std::string>("k") == "made");
  }

  // GCC 12 destroys a lambda temporary whose captures have destructors twice
  // when it is made within a co_await expression (asio alone shows it): such
  // a creator is named first, as the README says.
  TEST_CASE("a coroutine creator capturing a string by value, named before the co_await") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    int right = 0;
    for (int i = 0; i < 100; ++i) {
      const std::string key = "key" + std::to_string(i % 4) + std::string(40, 'k');
      asio::co_spawn(
          io,
          [&, key]() -> asio::awaitable<void> {
            auto load = [&, key]() -> asio::awaitable<std::string> {
              f.creator_calls.fetch_add(1);
              co_await asio::post(io, asio::use_awaitable);
              co_return "value of " + key;
            };
            const std::string v =
                co_await region.async_get_or_create(key, load, asio::use_awaitable);
            if (v == "value of " + key) ++right;
          },
          asio::detached);
    }
    io.run();
    CHECK(right == 100);
    CHECK(f.creator_calls.load() == 4);
  }

  TEST_CASE("a coroutine creator's exception reaches every waiter and leaves no lease") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    int failed = 0;
    auto failing = [&]() -> asio::awaitable<std::string> {
      co_await asio::post(io, asio::use_awaitable);
      throw std::runtime_error("db down");
    };
    for (int i = 0; i < 10; ++i) {
      region.async_get_or_create("k", failing,
                                 asio::bind_executor(io, [&](std::exception_ptr e, std::string) {
                                   try {
                                     std::rethrow_exception(e);
                                   } catch (const std::runtime_error& error) {
                                     if (std::string_view(error.what()) == "db down") ++failed;
                                   }
                                 }));
    }
    io.run();
    CHECK(failed == 10);
    // No lease left: the next call creates at once.
    io.restart();
    auto next = region.async_get_or_create("k", f.creator("v"), asio::use_future);
    io.run();
    CHECK(next.get() == "v");
    CHECK(f.creator_calls.load() == 1);
  }

  TEST_CASE("async_get, async_set and async_remove") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    std::vector<std::string> steps;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto missing = co_await region.async_get<std::string>("k", asio::use_awaitable);
          steps.push_back(missing ? *missing : "miss");
          const bool stored =
              co_await region.async_set("k", std::string("v1"), asio::use_awaitable);
          steps.push_back(stored ? "stored" : "not stored");
          auto got = co_await region.async_get<std::string>("k", asio::use_awaitable);
          steps.push_back(got ? *got : "miss");
          const bool removed = co_await region.async_remove("k", asio::use_awaitable);
          steps.push_back(removed ? "removed" : "not removed");
          auto gone = co_await region.async_get<std::string>("k", asio::use_awaitable);
          steps.push_back(gone ? *gone : "miss");
        },
        asio::detached);
    io.run();
    CHECK(steps == std::vector<std::string>{"miss", "stored", "v1", "removed", "miss"});
    CHECK_FALSE(region.get<std::string>("k"));
  }

  TEST_CASE("a request cancelled before it starts is not made: operation_canceled") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    asio::cancellation_signal signal;
    std::exception_ptr ended;
    bool completed = false;
    region.async_set("k", std::string("v"),
                     asio::bind_cancellation_slot(
                         signal.slot(), asio::bind_executor(io, [&](std::exception_ptr e, bool) {
                           ended = e;
                           completed = true;
                         })));
    signal.emit(asio::cancellation_type::terminal);  // before the I/O thread runs it
    io.run();
    REQUIRE(completed);
    try {
      std::rethrow_exception(ended);
    } catch (const std::system_error& e) {
      CHECK(e.code() == std::errc::operation_canceled);
    } catch (...) {
      FAIL("not a system_error");
    }
    CHECK_FALSE(region.get<std::string>("k"));
  }

  TEST_CASE("async_get_or_create_multi: one creation of the missing keys, values in order") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    REQUIRE(region.set("b", std::string("B")));
    asio::io_context io;
    std::vector<std::vector<std::string>> asked;
    auto creator = [&](std::span<const std::string_view> missing) {
      asked.emplace_back(missing.begin(), missing.end());
      std::vector<std::string> out;
      for (auto k : missing) out.push_back("made " + std::string(k));
      return out;
    };
    std::vector<std::string> got;
    std::vector<std::string> keys{"a", "b", "c"};
    region.async_get_or_create_multi(
        keys, creator,
        asio::bind_executor(io, [&](std::exception_ptr e, std::vector<std::string> v) {
          if (!e) got = std::move(v);
        }));
    io.run();
    CHECK(got == std::vector<std::string>{"made a", "B", "made c"});
    REQUIRE(asked.size() == 1);
    CHECK(asked[0] == std::vector<std::string>{"a", "c"});
    // A coroutine creator; its keys live until it is done. A wrong count
    // of values is an error, and stores nothing.
    io.restart();
    auto coro =
        [](std::span<const std::string_view> missing) -> asio::awaitable<std::vector<std::string>> {
      co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
      std::vector<std::string> out;
      for (auto k : missing) out.push_back("co " + std::string(k));
      co_return out;
    };
    std::vector<std::string> keys2{"a", "d", "e"};
    auto second = region.async_get_or_create_multi(keys2, coro, asio::use_future);
    auto short_by_one = [](std::span<const std::string_view>) {
      return std::vector<std::string>{"only one"};
    };
    std::vector<std::string> keys3{"x", "y"};
    // (A callback on the I/O thread, not a future: the exception is looked
    // at on the thread that ran the call.)
    std::exception_ptr wrong;
    region.async_get_or_create_multi(
        keys3, short_by_one,
        asio::bind_executor(io,
                            [&](std::exception_ptr e, std::vector<std::string>) { wrong = e; }));
    io.run();
    CHECK(second.get() == std::vector<std::string>{"made a", "co d", "co e"});
    REQUIRE(wrong);
    CHECK_THROWS_AS(std::rethrow_exception(wrong), std::invalid_argument);
    CHECK_FALSE(region.get<std::string>("x"));
  }

  TEST_CASE("cached() and cached_multi() wrappers: async_call") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    asio::io_context io;
    std::atomic<int> calls{0};
    auto name = dogpile::cached(region, "name", [&](int id, std::string_view suffix) {
      calls.fetch_add(1);
      return std::to_string(id) + std::string(suffix);
    });
    auto empty_not_kept = dogpile::cached(region, "empty", [&](int) {
                            calls.fetch_add(1);
                            return std::string();
                          }).should_cache([](const std::string& v) { return !v.empty(); });
    auto names = dogpile::cached_multi(region, "names", [&](std::span<const int> ids) {
      calls.fetch_add(1);
      std::vector<std::string> out;
      for (int id : ids) out.push_back("n" + std::to_string(id));
      return out;
    });
    std::vector<std::string> got;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          std::string suffix = "!";
          got.push_back(co_await name.async_call(7, std::string_view(suffix), asio::use_awaitable));
          suffix = "?";  // the call kept its own copy
          const std::string_view bang = "!";
          got.push_back(co_await name.async_call(7, bang, asio::use_awaitable));
          got.push_back(co_await empty_not_kept.async_call(1, asio::use_awaitable));
          got.push_back(co_await empty_not_kept.async_call(1, asio::use_awaitable));
          const std::vector<int> ids{1, 2};
          auto many = co_await names.async_call(ids, asio::use_awaitable);
          got.insert(got.end(), many.begin(), many.end());
        },
        asio::detached);
    io.run();
    CHECK(got == std::vector<std::string>{"7!", "7!", "", "", "n1", "n2"});
    CHECK(calls.load() == 4);  // name once, empty twice (not stored), names once
    CHECK(name.get(7, std::string_view("!")) == "7!");
  }
}
