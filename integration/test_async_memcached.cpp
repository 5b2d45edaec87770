// SPDX-License-Identifier: MIT
// Asynchronous calls on real memcached (dogpile/asio.hpp): a herd on one
// I/O thread waits for another process's creation on timers and flight
// continuations, its requests on the pool; run on both transports.
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/asio.hpp"
#include "dogpile/metrics.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::test::MemcachedServer;
using dogpile::test::quiet;

TEST_SUITE("async on memcached") {
  TEST_CASE("1,000 coroutines on one I/O thread wait for another process's creation, then get it") {
    MemcachedServer server;
    auto options = quiet({});
    options.expiration = 60s;
    CacheRegion holder(dogpile::test::memcached(server.options()), options);  // another process
    CacheRegion region(dogpile::test::memcached(server.options()), options);
    std::atomic<bool> entered{false};
    std::atomic<bool> release{false};
    std::thread creator([&] {
      holder.get_or_create("k", [&] {
        entered = true;
        while (!release.load()) std::this_thread::yield();
        return std::string("theirs");
      });
    });
    while (!entered.load()) std::this_thread::yield();
    asio::io_context io;
    std::atomic<int> theirs{0};
    std::atomic<int> other{0};
    std::atomic<int> ours{0};
    for (int i = 0; i < 1'000; ++i) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            const std::string v = co_await region.async_get_or_create(
                "k",
                [&] {
                  ours.fetch_add(1);
                  return std::string("ours");
                },
                asio::use_awaitable);
            (v == "theirs" ? theirs : other).fetch_add(1);
          },
          asio::detached);
    }
    // The holder finishes 300 ms after the herd is seen waiting, on another
    // thread; meanwhile the I/O thread runs the waiting herd: one poller on
    // timers, the rest following it.
    std::thread finisher([&] {
      const auto limit = std::chrono::steady_clock::now() + 30s;
      while (region.stats().lock_waits == 0 && std::chrono::steady_clock::now() < limit) {
        std::this_thread::yield();
      }
      std::this_thread::sleep_for(300ms);
      release = true;
    });
    const auto started = std::chrono::steady_clock::now();
    io.run();
    const auto took = std::chrono::steady_clock::now() - started;
    finisher.join();
    creator.join();
    CHECK(theirs.load() == 1'000);
    CHECK(other.load() == 0);
    CHECK(ours.load() == 0);
    CHECK(region.stats().lock_waits >= 1);
    CHECK(took >= 250ms);  // they did wait for the holder
    MESSAGE("1,000 waiters served after " << std::chrono::duration<double, std::milli>(took).count()
                                          << " ms");
  }

  TEST_CASE("a fresh hit through the pool: the value, one request per call") {
    MemcachedServer server;
    CacheRegion region(dogpile::test::memcached(server.options()), quiet({}));
    region.get_or_create("k", [] { return std::string("v"); });
    asio::io_context io;
    std::atomic<int> served{0};
    for (int i = 0; i < 100; ++i) {
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            const std::string v = co_await region.async_get_or_create(
                "k", [] { return std::string("x"); }, asio::use_awaitable);
            if (v == "v") served.fetch_add(1);
          },
          asio::detached);
    }
    auto requests = [&] {
      std::uint64_t n = 0;
      for (std::size_t op = 0; op < dogpile::kBackendOps; ++op) {
        if (op == static_cast<std::size_t>(dogpile::BackendOp::clock) ||
            op == static_cast<std::size_t>(dogpile::BackendOp::invalidation)) {
          continue;  // the region's own chores
        }
        n += region.metrics().backend[op].requests;
      }
      return n;
    };
    const auto before = requests();
    io.run();
    CHECK(served.load() == 100);
    CHECK(region.stats().hits == 100);
    CHECK(requests() - before == 100);  // one get a call, as the synchronous call
    // On the meta transport those reads are the loop's own: written by the
    // I/O thread on the connection it took from the pool, not on a pool thread.
    if (dogpile::test::transport() == dogpile::test::Transport::meta) {
      CHECK(region.backend().fleet_stats()->loop_reads == 100);
    }
  }

  TEST_CASE("multi, set, get and remove through the pool, and a coroutine creator") {
    MemcachedServer server;
    CacheRegion region(dogpile::test::memcached(server.options()), quiet({}));
    REQUIRE(region.set("b", std::string("B")));
    asio::io_context io;
    std::vector<std::string> got;
    std::vector<std::vector<std::string>> asked;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          const std::vector<std::string> keys{"a", "b", "c"};
          auto values = co_await region.async_get_or_create_multi(
              keys,
              [&](std::span<const std::string_view> missing) {
                asked.emplace_back(missing.begin(), missing.end());
                std::vector<std::string> out;
                for (auto k : missing) out.push_back("made " + std::string(k));
                return out;
              },
              asio::use_awaitable);
          got.insert(got.end(), values.begin(), values.end());
          co_await region.async_set("d", std::string("D"), asio::use_awaitable);
          auto d = co_await region.async_get<std::string>("d", asio::use_awaitable);
          got.push_back(d.value_or("miss"));
          const bool removed = co_await region.async_remove("d", asio::use_awaitable);
          got.push_back(removed ? "removed" : "kept");
          auto gone = co_await region.async_get<std::string>("d", asio::use_awaitable);
          got.push_back(gone.value_or("miss"));
          got.push_back(co_await region.async_get_or_create(
              "e",
              []() -> asio::awaitable<std::string> {
                co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
                co_return std::string("co");
              },
              asio::use_awaitable));
        },
        asio::detached);
    io.run();
    CHECK(got == std::vector<std::string>{"made a", "B", "made c", "D", "removed", "miss", "co"});
    REQUIRE(asked.size() == 1);
    CHECK(asked[0] == std::vector<std::string>{"a", "c"});
    CHECK(region.get<std::string>("c") == "made c");
    CHECK(region.get<std::string>("e") == "co");
  }

  TEST_CASE("the loop's connection: two threads running one io_context, a restart while idle") {
    MemcachedServer server;
    CacheRegion region(dogpile::test::memcached(server.options()), quiet({}));
    region.get_or_create("k", [] { return std::string("v"); });  // a connection in the pool
    const bool meta = dogpile::test::transport() == dogpile::test::Transport::meta;
    asio::io_context io;  // one loop throughout: its connection outlives each herd
    auto herd = [&](int calls) {
      io.restart();
      std::atomic<int> right{0};
      for (int i = 0; i < calls; ++i) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              auto make = [] { return std::string("x"); };
              if (co_await region.async_get_or_create("k", make, asio::use_awaitable) == "v") {
                right.fetch_add(1);
              }
            },
            asio::detached);
      }
      std::thread second([&] { io.run(); });
      io.run();
      second.join();
      return right.load();
    };
    CHECK(herd(2'000) == 2'000);
    const auto read_on_loop = meta ? region.backend().fleet_stats()->loop_reads : 0;
    if (meta) CHECK(read_on_loop >= 1'000);
    // The server restarts while no call runs: the loop's connection (idle,
    // now closed by the server) fails the next reads before any reply; they
    // are made again on the pool's new connection, reported as no error.
    server.stop();
    server.restart();
    // The restarted server is empty. (A pooled connection it closed may
    // fail a first write, and mark it down for the retry timeout.)
    const auto limit = std::chrono::steady_clock::now() + 10s;
    while (!region.set("k", std::string("v")) && std::chrono::steady_clock::now() < limit) {
      std::this_thread::sleep_for(50ms);
    }
    REQUIRE(region.get<std::string>("k") == "v");
    const auto errors = region.stats().backend_errors;
    const auto loop_reads_before = meta ? region.backend().fleet_stats()->loop_reads : 0;
    CHECK(herd(100) == 100);
    CHECK(region.stats().backend_errors == errors);
    CHECK(region.get<std::string>("k") == "v");
    if (meta) CHECK(region.backend().fleet_stats()->loop_reads > loop_reads_before);
  }
}
