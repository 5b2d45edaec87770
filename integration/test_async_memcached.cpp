// SPDX-License-Identifier: MIT
// Asynchronous calls on real memcached (dogpile/asio.hpp): a herd on one
// I/O thread waits for another process's creation on timers and flight
// continuations, its requests on the pool; run on both transports.
#include <doctest/doctest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/asio.hpp"
#include "dogpile/memcached_meta.hpp"
#include "dogpile/metrics.hpp"
#include "dogpile/region.hpp"
#include "hostile_server.hpp"
#include "memcached_server.hpp"
#include "quiet.hpp"
#include "slack.hpp"

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

namespace {
using dogpile::test::HostileServer;
using dogpile::test::kSchedulingSlackMs;
using dogpile::test::now_ms;
using Reply = HostileServer::Reply;

constexpr Reply kHostile[] = {Reply::stream,          Reply::stream_endless, Reply::drip,
                              Reply::stall_mid_value, Reply::truncated,      Reply::reset,
                              Reply::out_of_order,    Reply::extra_replies,  Reply::garbage};

// The most the process may grow while a server streams: the largest item is
// 1 MiB. (ThreadSanitizer's shadow of every byte touched counts in the
// resident size too, and more of it.)
// Under ThreadSanitizer (many times slower, on a machine its builds share),
// a call refused at the first chunk of its reply may take longer than the
// 300 ms deadline allows: there it must still end before the 1 s poll
// timeout would have ended it.
#if defined(__SANITIZE_THREAD__)
constexpr long kMostGrowthKb = 64 * 1024;
constexpr double kLatestMs = 1000;
#else
constexpr long kMostGrowthKb = 16 * 1024;
constexpr double kLatestMs = 350;
#endif

std::shared_ptr<dogpile::Backend> meta_backend(const std::string& options) {
  return std::make_shared<dogpile::MemcachedMetaBackend>(options);
}
}  // namespace

// The meta transport's reads on an event loop run on a connection of the
// loop's own: the hostile server's bounds (integration/test_hostile.cpp) hold
// there too. Meta only, whatever the suite's transport.
TEST_SUITE("hostile server on an event loop") {
  TEST_CASE("on an event loop's connection: a call ends by its deadline (+50 ms), nothing wrong") {
    for (const Reply how : kHostile) {
      CAPTURE(HostileServer::name(how));
      HostileServer server(how);
      dogpile::CacheRegion region(meta_backend(server.options() + " --POLL-TIMEOUT=1000"),
                                  dogpile::test::quiet({.expiration = 60s,
                                                        .deadline = 300ms,
                                                        .clock_sync = std::nullopt,
                                                        .invalidation_check = std::nullopt}));
      // A write (answered honestly) leaves a connection in the pool: the
      // loop takes it for its reads.
      REQUIRE(region.set("warm", std::string("x")));
      dogpile::test::reset_peak_rss();
      const long before = dogpile::test::peak_rss_kb();
      asio::io_context io;
      double slowest = 0;
      int wrong = 0;
      int ended = 0;
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            for (int i = 0; i < 3; ++i) {
              const double start = now_ms();
              auto make = [] { return std::string("the creator's"); };
              const std::string v =
                  co_await region.async_get_or_create("k", make, asio::use_awaitable);
              slowest = std::max(slowest, now_ms() - start);
              if (v != "the creator's") ++wrong;
              ++ended;
            }
          },
          asio::detached);
      io.run();
      const long grew = dogpile::test::peak_rss_kb() - before;
      const auto loop_reads = region.backend().fleet_stats()->loop_reads;
      std::printf(
          "hostile server, meta transport, event loop, server %-28s slowest of 3 calls "
          "%6.1f ms (deadline 300 ms), %d wrong, %llu reads on the loop, peak +%ld kB\n",
          HostileServer::name(how), slowest, wrong, static_cast<unsigned long long>(loop_reads),
          grew);
      CHECK(ended == 3);
      CHECK(wrong == 0);
      CHECK(slowest <= kLatestMs + kSchedulingSlackMs);
      CHECK(grew < kMostGrowthKb);
      CHECK(loop_reads >= 1);  // the loop's own connection met the server
      CHECK(region.stats().backend_errors >= 1);
    }
  }

  TEST_CASE("on an event loop's connection: a server's refusal ends that call only") {
    // SERVER_ERROR carries no opaque: it answers the oldest read, which the
    // call reports, as on a pooled connection; the connection stays open
    // and the server is not counted failed (not marked down).
    HostileServer server(Reply::server_error);
    dogpile::CacheRegion region(
        meta_backend(server.options()),
        dogpile::test::quiet(
            {.expiration = 60s, .clock_sync = std::nullopt, .invalidation_check = std::nullopt}));
    REQUIRE(region.set("warm", std::string("x")));
    asio::io_context io;
    int right = 0;
    for (int i = 0; i < 5; ++i) {
      auto make = [] { return std::string("the creator's"); };
      region.async_get_or_create("k" + std::to_string(i), make,
                                 asio::bind_executor(io, [&](std::exception_ptr e, std::string v) {
                                   if (!e && v == "the creator's") ++right;
                                 }));
    }
    io.run();
    CHECK(right == 5);
    CHECK(region.backend().fleet_stats()->loop_reads == 5);  // one connection took all five
    CHECK(region.stats().backend_errors >= 5);
    CHECK(region.set("after", std::string("y")));  // not marked down
  }

  TEST_CASE(
      "on an event loop's connection: a read stalled mid-value ends within 50 ms of its "
      "cancellation") {
    HostileServer server(Reply::stall_mid_value);
    dogpile::CacheRegion region(
        meta_backend(server.options() + " --POLL-TIMEOUT=1000"),
        dogpile::test::quiet(
            {.expiration = 60s, .clock_sync = std::nullopt, .invalidation_check = std::nullopt}));
    REQUIRE(region.set("warm", std::string("x")));
    asio::io_context io;
    asio::cancellation_signal signal;
    std::exception_ptr ended;
    std::string value;
    double done_at = 0;
    auto make = [] { return std::string("the creator's"); };
    region.async_get_or_create(
        "k", make,
        asio::bind_cancellation_slot(
            signal.slot(), asio::bind_executor(io, [&](std::exception_ptr e, std::string v) {
              ended = e;
              value = v;
              done_at = now_ms();
            })));
    asio::steady_timer cancel(io, 100ms);
    double cancelled_at = 0;
    cancel.async_wait([&](const std::error_code&) {
      cancelled_at = now_ms();
      signal.emit(asio::cancellation_type::terminal);
    });
    io.run();
    std::printf("a read stalled on the loop's connection ended %.1f ms after its cancellation\n",
                done_at - cancelled_at);
    CHECK(region.backend().fleet_stats()->loop_reads == 1);
    CHECK(done_at >= cancelled_at);
    CHECK(done_at - cancelled_at <= 50 + kSchedulingSlackMs);
    CHECK((ended != nullptr || value == "the creator's"));  // never the server's bytes
  }
}
