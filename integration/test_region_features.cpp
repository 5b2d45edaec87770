// SPDX-License-Identifier: MIT
// cached() wrappers, invalidation across processes, and background
// regeneration, on real memcached.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../tests/processes.hpp"
#include "dogpile/cached.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "proxy.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Invalidation;
using dogpile::Outcome;
using dogpile::RegionOptions;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;
using dogpile::test::Proxy;
using dogpile::test::quiet;

namespace {

// Another process polls a key every 2 ms; this one invalidates the region.
// Returns how long after the invalidation the other process first got a
// value it made itself (its creator ran: the old value was no longer used).
double invalidation_seen_after_ms(const MemcachedServer& server, Invalidation kind) {
  struct State {
    std::atomic<bool> polling{false};
    std::atomic<double> invalidated_at{0};
    std::atomic<double> seen_at{0};
  };
  dogpile::test::Shared<State> state;
  // No clock measurement: the processes share this host's clock, and this one
  // stays single-threaded until it has forked (ThreadSanitizer cannot follow
  // a process with threads across fork()).
  const auto options = quiet({.expiration = 3600s, .clock_sync = std::nullopt});
  CacheRegion region(dogpile::test::memcached(server.options()), options);
  REQUIRE(region.set("k", std::string("before")));
  const pid_t other = dogpile::test::fork_worker([&] {
    CacheRegion region(dogpile::test::memcached(server.options()), options);
    for (;;) {
      const std::string v = region.get_or_create("k", [] { return std::string("after"); });
      if (v == "after") break;
      if (v != "before") return 1;
      state->polling = true;
      std::this_thread::sleep_for(2ms);
    }
    state->seen_at = now_ms();
    return 0;
  });
  while (!state->polling.load()) std::this_thread::yield();
  std::this_thread::sleep_for(300ms);  // let the other process's check interval run on
  state->invalidated_at = now_ms();
  region.invalidate(kind);
  CHECK(dogpile::test::wait_worker(other) == 0);
  return state->seen_at.load() - state->invalidated_at.load();
}

}  // namespace

TEST_SUITE("features on memcached") {
  TEST_CASE("the local tier past its time to live: a version check, not a read, while unchanged") {
    MemcachedServer server;
    std::mutex mutex;
    std::vector<std::string> requests, replies;
    Proxy proxy(
        server.port(),
        [&](const std::string& line) {
          std::lock_guard lock(mutex);
          requests.push_back(line);
          return line;
        },
        [&](const std::string& line) {
          std::lock_guard lock(mutex);
          replies.push_back(line);
          return line;
        });
    auto o = quiet({.expiration = 60s, .clock_sync = std::nullopt});
    o.invalidation_check = std::nullopt;
    o.local = dogpile::LocalTier{.ttl = 100ms};
    CacheRegion here(dogpile::test::memcached(proxy.options()), o);
    CacheRegion elsewhere(dogpile::test::memcached(server.options()),
                          quiet({.expiration = 60s, .clock_sync = std::nullopt}));
    const std::string big(100 * 1024, 'v');
    CHECK(here.get_or_create("k", [&] { return big; }) == big);
    const bool meta = dogpile::test::transport() == dogpile::test::Transport::meta;
    // The meta transport's store returns the new item's version; the classic
    // one's does not, so there the first time past the time to live reads it.
    std::this_thread::sleep_for(150ms);
    CHECK(here.get_or_create("k", [&] { return big; }) == big);
    const std::uint64_t base = here.stats().revalidated;
    CHECK(base == (meta ? 1u : 0u));
    for (int round = 1; round <= 2; ++round) {
      std::this_thread::sleep_for(150ms);
      {
        std::lock_guard lock(mutex);
        requests.clear();
        replies.clear();
      }
      Outcome outcome{};
      CHECK(here.get_or_create(
                "k", [] { return std::string("x"); }, &outcome) == big);
      CHECK(outcome == Outcome::fresh);
      CHECK(here.stats().revalidated == base + static_cast<std::uint64_t>(round));
      std::lock_guard lock(mutex);
      REQUIRE(requests.size() == 1);
      MESSAGE("the check: ", requests[0], " -> ", replies.empty() ? "" : replies[0]);
      if (meta) {
        // The version alone: a header, not the 100 KB value.
        CHECK(requests[0].starts_with("mg k c "));
        REQUIRE(replies.size() == 1);
        CHECK(replies[0].starts_with("HD c"));
      } else {
        CHECK(requests[0].starts_with("gets "));  // the classic transport reads it whole
      }
    }
    // Written elsewhere: the next check sees the new version, and reads it.
    elsewhere.set("k", std::string("new"));
    std::this_thread::sleep_for(150ms);
    CHECK(here.get_or_create("k", [] { return std::string("x"); }) == "new");
    CHECK(here.stats().revalidated == base + 2);
  }

  TEST_CASE("a hard invalidation reaches another process within invalidation_check (1 s)") {
    MemcachedServer server;
    const double after = invalidation_seen_after_ms(server, Invalidation::hard);
    std::printf("hard invalidation seen by another process after %.0f ms (check every 1000 ms)\n",
                after);
    CHECK(after <= 1000 + 250);  // the interval, plus polling and scheduling slack
  }

  TEST_CASE("a soft invalidation reaches another process within invalidation_check (1 s)") {
    MemcachedServer server;
    const double after = invalidation_seen_after_ms(server, Invalidation::soft);
    std::printf("soft invalidation seen by another process after %.0f ms (check every 1000 ms)\n",
                after);
    CHECK(after <= 1000 + 250);
  }

  TEST_CASE("one key soft-invalidated: stale for every process at once, one refresh") {
    MemcachedServer server;
    const auto options = quiet({.expiration = 3600s, .invalidation_check = std::nullopt});
    CacheRegion writer(dogpile::test::memcached(server.options()), options);
    CacheRegion refresher(dogpile::test::memcached(server.options()), options);
    CacheRegion reader(dogpile::test::memcached(server.options()), options);
    writer.get_or_create("k", [] { return std::string("old"); });
    writer.get_or_create("other", [] { return std::string("o"); });
    CHECK(writer.invalidate("k", Invalidation::soft));
    std::atomic<bool> creating{false};
    std::atomic<int> calls{0};
    Outcome refreshed{};
    std::jthread slow([&] {
      CHECK(refresher.get_or_create(
                "k",
                [&] {
                  calls.fetch_add(1);
                  creating = true;
                  std::this_thread::sleep_for(300ms);
                  return std::string("new");
                },
                &refreshed) == "new");
    });
    while (!creating) std::this_thread::sleep_for(1ms);
    Outcome outcome{};
    CHECK(reader.get_or_create(
              "k",
              [&] {
                calls.fetch_add(1);
                return std::string("second");
              },
              &outcome) == "old");
    CHECK(outcome == Outcome::stale);
    slow.join();
    CHECK(refreshed == Outcome::created);
    CHECK(calls == 1);
    CHECK(reader.get_or_create(
              "k", [] { return std::string("x"); }, &outcome) == "new");
    CHECK(outcome == Outcome::fresh);
    CHECK(reader.get_or_create(
              "other", [] { return std::string("x"); }, &outcome) == "o");
    CHECK(outcome == Outcome::fresh);
  }

  TEST_CASE("background refresh: the stale winner returns before its creator runs") {
    MemcachedServer server;
    auto make_region = [&](bool background) {
      RegionOptions o = quiet({.expiration = 60s});
      o.background_refresh = background;
      return std::make_unique<CacheRegion>(dogpile::test::memcached(server.options()), o);
    };
    auto write_stale = [&](const std::string& key) {
      // A host whose clock is 61 s behind, trusting it (no clock_sync):
      // its value is a minute old on arrival.
      dogpile::ManualClock past(dogpile::system_clock().now() - 61s);
      CacheRegion writer(dogpile::test::memcached(server.options()),
                         quiet({.expiration = 60s, .clock = &past, .clock_sync = std::nullopt}));
      REQUIRE(writer.set(key, std::string("old")));
    };
    double without_ms = 0, with_ms = 0;
    {
      write_stale("sync");
      auto region = make_region(false);
      const double start = now_ms();
      Outcome outcome{};
      CHECK(region->get_or_create(
                "sync",
                [] {
                  std::this_thread::sleep_for(200ms);
                  return std::string("new");
                },
                &outcome) == "new");
      without_ms = now_ms() - start;
      CHECK(outcome == Outcome::created);
    }
    {
      write_stale("async");
      auto region = make_region(true);
      std::atomic<bool> returned{false};
      std::atomic<bool> creator_saw_return{false};
      const double start = now_ms();
      Outcome outcome{};
      CHECK(region->get_or_create(
                "async",
                [&returned, &creator_saw_return] {
                  // Runs on the executor; finishes only after the caller returned.
                  const double deadline = now_ms() + 10000;
                  while (!returned.load() && now_ms() < deadline) std::this_thread::sleep_for(1ms);
                  creator_saw_return = returned.load();
                  std::this_thread::sleep_for(200ms);
                  return std::string("new");
                },
                dogpile::CallOptions{.background = true, .outcome = &outcome}) == "old");
      with_ms = now_ms() - start;
      returned = true;
      CHECK(outcome == Outcome::stale);
      // The new value appears once the background creation ends.
      std::optional<std::string> now;
      const double deadline = now_ms() + 10000;
      while (!(now = region->get<std::string>("async")) && now_ms() < deadline) {
        std::this_thread::sleep_for(5ms);
      }
      CHECK(now == "new");
      CHECK(creator_saw_return.load());
      CHECK(region->stats().background_refreshes == 1);
    }
    std::printf("stale-key winner, creator 200 ms: %.1f ms without background, %.3f ms with\n",
                without_ms, with_ms);
  }

  TEST_CASE("cached() across two processes: one call of the function for a key") {
    MemcachedServer server;
    struct State {
      std::atomic<int> calls{0};
      std::atomic<int> ready{0};
      std::atomic<bool> go{false};
    };
    dogpile::test::Shared<State> state;
    auto worker = [&] {
      CacheRegion region(dogpile::test::memcached(server.options()),
                         quiet({.expiration = 60s, .key_prefix = "app:"}));
      auto report = dogpile::cached(region, "report", [&](int year, std::string_view unit) {
        state->calls.fetch_add(1);
        std::this_thread::sleep_for(100ms);
        return std::to_string(year) + "/" + std::string(unit);
      });
      std::vector<std::jthread> threads;
      for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
          state->ready.fetch_add(1);
          while (!state->go.load()) std::this_thread::yield();
          if (report(2026, "sales") != "2026/sales") std::abort();
        });
      }
      return 0;
    };
    std::vector<pid_t> pids;
    for (int p = 0; p < 2; ++p) pids.push_back(dogpile::test::fork_worker(worker));
    while (state->ready.load() < 16) std::this_thread::yield();
    state->go = true;
    for (pid_t pid : pids) CHECK(dogpile::test::wait_worker(pid) == 0);
    CHECK(state->calls.load() == 1);
    CHECK(server.raw("get app:report|2026|sales\r\n").starts_with("VALUE app:report|2026|sales "));
  }

  TEST_CASE("a 2 MiB value is cached compressed, where memcached refuses it plain") {
    MemcachedServer server;  // items of at most 1 MiB, memcached's default
    // About 2 MiB of report rows: text that repeats, as cached records do.
    std::string report;
    for (int i = 0; report.size() < (2u << 20); ++i) {
      report += "{\"row\":" + std::to_string(i) +
                ",\"region\":\"emea\",\"total\":" + std::to_string(i * 37 % 1000) + "}\n";
    }
    int runs = 0;
    auto build = [&] {
      ++runs;
      return report;
    };
    int errors = 0;
    std::string code;
    std::vector<std::string> messages;
    auto plain_options = quiet({.expiration = 60s, .clock_sync = std::nullopt});
    plain_options.on_error = [&](const dogpile::ErrorEvent& e) {
      ++errors;
      code = e.code;
      messages.emplace_back(e.message);
    };
    // A long poll timeout: 2 MiB each way under a loaded sanitized run must
    // not time out (and mark the server down), which is not what is tested.
    CacheRegion plain(dogpile::test::memcached(server.options() + " --POLL-TIMEOUT=10000"),
                      plain_options);
    for (int i = 0; i < 3; ++i) CHECK((plain.get_or_create("report", build) == report));
    for (const auto& m : messages) MESSAGE(m);
    CHECK(runs == 3);    // never stored: built on every call
    CHECK(errors >= 3);  // each store refused, and reported
    CHECK(code == "ITEM_TOO_BIG");

    runs = 0;
    auto options = quiet({.expiration = 60s, .clock_sync = std::nullopt});
    options.compression.threshold = 64 * 1024;
    CacheRegion compressed(dogpile::test::memcached(server.options()), options);
    for (int i = 0; i < 3; ++i) CHECK((compressed.get_or_create("report", build) == report));
    CHECK(runs == 1);
    CHECK(compressed.stats().compressed == 1);
    CHECK(compressed.stats().hits == 2);
    // Another region, compression off, reads it too.
    CHECK((plain.get<std::string>("report") == report));
  }
}
