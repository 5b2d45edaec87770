// SPDX-License-Identifier: MIT
// The fleet while a node is away, on real memcached processes: the gutter
// (--GUTTER) that takes a dead node's keys, so processes share one creation
// and see each other's writes; and the journal that replays, as deletes, the
// writes a stalled node missed, as soon as it answers.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/metrics.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;
using dogpile::test::quiet;

namespace {

std::string gutter_option(const MemcachedServer& gutter) {
  return " --GUTTER=127.0.0.1:" + std::to_string(gutter.port());
}

// The seconds left of `key` on `server` (`mg k t`); -2 if it is not there.
long ttl_left(const MemcachedServer& server, const std::string& key) {
  const std::string reply = server.raw("mg " + key + " t\r\nmn\r\n");
  if (!reply.starts_with("HD t")) return -2;
  return std::stol(reply.substr(4));
}

// How long after `since` (ms) `reader` first read "k" as something other
// than `old`, polling every 5 ms; -1 if it still read `old` 3 s after.
double ms_until_not(CacheRegion& reader, const std::string& old, double since) {
  while (now_ms() - since < 3000) {
    if (reader.get<std::string>("k") != old) return now_ms() - since;
    std::this_thread::sleep_for(5ms);
  }
  return -1;
}

}  // namespace

TEST_SUITE("fleet") {
  TEST_CASE(
      "a gutter takes a dead node's keys: one creation for two processes, their writes "
      "served, its TTL capped, untouched while the node is up") {
    MemcachedServer node;
    MemcachedServer gutter;
    const std::string options = node.options() + gutter_option(gutter) +
                                " --GUTTER-TTL=3 --RETRY-TIMEOUT=60 --CONNECT-TIMEOUT=200";
    // Two backends: two processes, each with its own view of the node.
    const auto backend_a = dogpile::test::memcached(options);
    const auto backend_b = dogpile::test::memcached(options);
    CacheRegion a(backend_a, quiet({.expiration = 60s}));
    CacheRegion b(backend_b, quiet({.expiration = 60s}));
    std::atomic<int> made{0};
    auto creator = [&] { return "v" + std::to_string(++made); };

    for (int i = 0; i < 5; ++i) {
      CHECK(a.get_or_create("k", creator) == "v1");
      CHECK(b.get_or_create("k", creator) == "v1");
    }
    CHECK(made == 1);
    // The node answers: the gutter is never asked.
    auto g = gutter.stats();
    CHECK(g["cmd_get"] == 0);
    CHECK(g["cmd_set"] == 0);
    CHECK(gutter.stats()["total_connections"] == g["total_connections"] + 1);  // the `stats` alone
    CHECK(backend_a->fleet_stats()->gutter_requests == 0);

    node.kill();
    // Each process's first call finds the node dead and serves the copy it
    // kept; the later ones go to the gutter, where one creation serves both.
    std::vector<std::string> served;
    for (int i = 0; i < 5; ++i) {
      served.push_back(a.get_or_create("k", creator));
      served.push_back(b.get_or_create("k", creator));
    }
    std::string order;
    for (const auto& v : served) order += v + " ";
    CAPTURE(order);
    CHECK(made == 2);
    for (const auto& v : served) CHECK((v == "v1" || v == "v2"));
    CHECK(served.back() == "v2");
    CHECK(gutter.stats()["cmd_get"] > 0);
    // Kept there for --GUTTER-TTL at most, though the region's is 60 s.
    const long left = ttl_left(gutter, a.backend_key("k"));
    CHECK(left >= 1);
    CHECK(left <= 3);

    // A cold key in the outage: the gutter's leases hold the herd of both
    // processes to one creation.
    std::atomic<int> cold_made{0};
    std::vector<std::thread> herd;
    std::vector<std::string> got(16);
    for (int t = 0; t < 16; ++t) {
      herd.emplace_back([&, t] {
        got[t] = (t % 2 == 0 ? a : b).get_or_create("cold", [&] {
          std::this_thread::sleep_for(100ms);
          return "cold" + std::to_string(++cold_made);
        });
      });
    }
    for (auto& t : herd) t.join();
    CHECK(cold_made == 1);
    for (const auto& v : got) CHECK(v == "cold1");

    // Writes in the outage are what is served: nothing they replaced.
    REQUIRE(b.set("k", std::string("w")));
    for (int i = 0; i < 3; ++i) CHECK(a.get_or_create("k", creator) == "w");
    REQUIRE(b.remove("cold"));
    CHECK_FALSE(a.get<std::string>("cold").has_value());
    const auto fleet_b = *backend_b->fleet_stats();
    CHECK(fleet_b.gutter_requests > 0);
    CHECK(fleet_b.journal_kept >= 2);  // "k" and "cold": deleted on the node when it answers
    CHECK(fleet_b.journal_dropped == 0);
    const std::string text = dogpile::prometheus_text(b);
    CHECK(text.find("dogpile_gutter_requests_total{region=\"default\"} " +
                    std::to_string(fleet_b.gutter_requests)) != std::string::npos);
    CHECK(text.find("# TYPE dogpile_journal_pending gauge") != std::string::npos);

    // The gutter dead too: degraded mode's bound as before, at most one
    // creation per process, each then serving what it made.
    const int made_before = made;
    gutter.kill();
    std::set<std::string> seen_a;
    std::set<std::string> seen_b;
    for (int i = 0; i < 3; ++i) {
      seen_a.insert(a.get_or_create("k", creator));
      seen_b.insert(b.get_or_create("k", creator));
    }
    CHECK(made - made_before <= 2);
    CHECK(seen_a.size() == 1);
    CHECK(seen_b.size() == 1);
  }

  TEST_CASE(
      "writes a stalled node missed are replayed once it answers: no process serves what "
      "they replaced") {
    for (int op = 0; op < 3; ++op) {  // set, remove, invalidate(key)
      CAPTURE(op);
      MemcachedServer server;
      // The writer marks the node down for a minute: the replay does not
      // wait for that retry, it tries the node every 100 ms.
      const std::string options = server.options() + " --POLL-TIMEOUT=300 --RETRY-TIMEOUT=60";
      const auto writer_backend = dogpile::test::memcached(options);
      CacheRegion writer(writer_backend, quiet({.expiration = 60s}));
      // The reader asks nothing during the stall (no clock sampling), so
      // that its transport has no failure to remember.
      CacheRegion reader(dogpile::test::memcached(options),
                         quiet({.expiration = 60s, .clock_sync = std::nullopt}));
      REQUIRE(writer.set("k", std::string("old")));
      REQUIRE(reader.get<std::string>("k") == "old");

      server.pause();
      if (op == 0) CHECK_FALSE(writer.set("k", std::string("new")));
      if (op == 1) CHECK_FALSE(writer.remove("k"));
      if (op == 2) writer.invalidate("k");
      CHECK(writer_backend->fleet_stats()->journal_pending >= 1);
      std::this_thread::sleep_for(400ms);  // the replayer tries the stalled node meanwhile
      server.resume();
      const double resumed = now_ms();
      // The reader saw no outage: it reads the node at once.
      const double gone_after = ms_until_not(reader, "old", resumed);
      CHECK(gone_after >= 0);
      CHECK(gone_after < 1000);
      std::printf("replay after SIGCONT (op %d): the old value gone after %.0f ms\n", op,
                  gone_after);
      // The journal empties within a pass of the replayer.
      while (writer_backend->fleet_stats()->journal_pending != 0 && now_ms() - resumed < 3000) {
        std::this_thread::sleep_for(5ms);
      }
      const auto fleet = *writer_backend->fleet_stats();
      CHECK(fleet.journal_pending == 0);
      CHECK(fleet.journal_replayed >= 1);
      // The node answers: the writer's keys are back on it at once.
      CHECK(writer.set("k", std::string("after")));
      CHECK(reader.get<std::string>("k") == "after");
      // Every read of the reader's was answered: "gone" was the node's word.
      CHECK(reader.stats().backend_errors == 0);
    }
  }

  TEST_CASE(
      "a write sent to the gutter while its node stalls is deleted on the node once it "
      "answers") {
    for (int op = 0; op < 2; ++op) {  // set, soft invalidate(key)
      CAPTURE(op);
      MemcachedServer node;
      MemcachedServer gutter;
      const std::string options =
          node.options() + gutter_option(gutter) + " --POLL-TIMEOUT=300 --RETRY-TIMEOUT=60";
      const auto writer_backend = dogpile::test::memcached(options);
      CacheRegion writer(writer_backend, quiet({.expiration = 60s, .clock_sync = std::nullopt}));
      CacheRegion reader(dogpile::test::memcached(options),
                         quiet({.expiration = 60s, .clock_sync = std::nullopt}));
      REQUIRE(writer.set("k", std::string("old")));
      REQUIRE(reader.get<std::string>("k") == "old");

      node.pause();
      // A read times out: the node is marked down, and the read goes on to
      // the gutter (where nothing is).
      CHECK_FALSE(writer.get<std::string>("probe").has_value());
      if (op == 0) {
        REQUIRE(writer.set("k", std::string("new")));  // to the gutter
        CHECK(writer.get<std::string>("k") == "new");
      } else {
        writer.invalidate("k", dogpile::Invalidation::soft);
      }
      CHECK(writer_backend->fleet_stats()->journal_pending == 1);
      node.resume();
      const double resumed = now_ms();
      // The reader saw no outage: it reads the node, which held "old" all along.
      const double gone_after = ms_until_not(reader, "old", resumed);
      CHECK(gone_after >= 0);
      CHECK(gone_after < 1000);
      CHECK(reader.stats().backend_errors == 0);
      std::printf("a gutter write replayed on the node after SIGCONT (op %d): %.0f ms\n", op,
                  gone_after);
    }
  }

  TEST_CASE("the gutter's and the journal's options: refused where they cannot work") {
    MemcachedServer server;
    auto refused = [&](const std::string& extra, bool auto_eject = false) {
      try {
        (void)dogpile::test::memcached(server.options() + extra, auto_eject);
      } catch (const std::invalid_argument& e) {
        CAPTURE(e.what());
        return true;
      }
      return false;
    };
    CHECK(refused(" --GUTTER="));
    CHECK(refused(" --GUTTER-TTL=0"));
    CHECK(refused(" --GUTTER-TTL=2592001"));
    CHECK(refused(" --JOURNAL-MAX=lots"));
    CHECK(refused(" --GUTTER=127.0.0.1:" + std::to_string(server.port())));  // a pool server
    CHECK(refused(" --GUTTER=127.0.0.1:1", true));                           // with auto-eject
    CHECK_FALSE(
        refused(" --GUTTER=127.0.0.1:1 --GUTTER=127.0.0.1:2 --GUTTER-TTL=5 --JOURNAL-MAX=0"));
  }
}
