// SPDX-License-Identifier: MIT
// What crosses the wire, counted by a proxy between the library and a real
// memcached: the requests of each path (README "Requests per call"), the
// polls of a waiting process, and a proxy that answers with another key's
// item (SPEC I1).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/memcached.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "proxy.hpp"
#include "quiet.hpp"
#include "wire_paths.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Outcome;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;
using dogpile::test::Proxy;
using dogpile::test::quiet;

namespace {

// A region whose every request passes through `proxy`. No invalidation
// checks: the counts are the paths' own (the proxy does not count the clock
// measurement's `stats` requests).
std::unique_ptr<CacheRegion> region_through(const Proxy& proxy, dogpile::RegionOptions o = {}) {
  o.invalidation_check = std::nullopt;
  return std::make_unique<CacheRegion>(dogpile::test::memcached(proxy.options()),
                                       quiet(std::move(o)));
}

// Writes, through a region on a host whose clock is `age` behind that trusts
// it, a value `age` old whose creation took `took`.
void write_old(const MemcachedServer& server, const std::string& key, dogpile::Duration age,
               dogpile::Duration took = 0s) {
  dogpile::ManualClock past(dogpile::system_clock().now() - age - took);
  CacheRegion writer(dogpile::test::memcached(server.options()),
                     quiet({.expiration = 3600s, .clock = &past, .clock_sync = std::nullopt}));
  writer.get_or_create(key, [&] {
    past.advance(took);
    return std::string("old");
  });
}

}  // namespace

TEST_SUITE("on the wire") {
  TEST_CASE("requests per call, path by path, counted on the wire") {
    const bool meta = dogpile::test::transport() == dogpile::test::Transport::meta;
    const auto costs = dogpile::test::measure_paths(dogpile::test::transport());
    std::printf("requests (round trips) per call on the %s transport, counted on the wire:\n",
                meta ? "meta" : "classic");
    std::map<std::string, dogpile::test::PathCost> by_path;
    for (const auto& c : costs) {
      std::printf("  %-50s %3d (%d): %s\n", c.path.c_str(), c.requests, c.round_trips,
                  c.what.c_str());
      by_path[c.path] = c;
    }
    auto requests = [&](const char* path) { return by_path.at(path).requests; };
    auto trips = [&](const char* path) { return by_path.at(path).round_trips; };
    CHECK(requests("cold, this caller creates") == (meta ? 2 : 5));
    CHECK(trips("cold, this caller creates") == requests("cold, this caller creates"));
    CHECK(requests("fresh hit") == 1);
    CHECK(trips("fresh hit") == 1);
    CHECK(requests("fresh hit, local tier (within its time to live)") == 0);
    CHECK(requests("stale, this caller regenerates") == (meta ? 2 : 5));
    CHECK(requests("stale, this caller wins, background refresh: the call") == (meta ? 1 : 3));
    CHECK(requests("stale, another process regenerating: first call") == (meta ? 1 : 2));
    CHECK(requests("stale, another process regenerating: next calls") == 1);
    CHECK(requests("cold, another process creating: each poll") == 1);
    CHECK(trips("cold, another process creating: each poll") == 1);
    CHECK(trips("100 fresh keys on one server (multi)") == 1);
    CHECK(requests("100 fresh keys on one server (multi)") == (meta ? 101 : 1));
  }

  TEST_CASE("a process waiting on a 5 s creation: polls with and without history") {
    MemcachedServer server;
    Proxy proxy(server.port());
    for (bool history : {true, false}) {
      CAPTURE(history);
      const std::string key = history ? "with-history" : "no-history";
      if (history) {
        // The last creation took 5 s; the value was then invalidated (its
        // envelope, still there, tells how long the next one will take).
        write_old(server, key, 0s, 5s);
        CacheRegion(dogpile::test::memcached(server.options()), quiet({})).remove(key);
      }
      // Both processes on this host: its clock is the fleet's (clock_sync off).
      // Across hosts the lock also says how far the holder's clock may be
      // off, and the waiter polls around the due time by as much.
      auto holder =
          std::make_unique<CacheRegion>(dogpile::test::memcached(server.options()),
                                        quiet({.expiration = 60s, .clock_sync = std::nullopt}));
      auto waiter = region_through(proxy, {.expiration = 60s, .clock_sync = std::nullopt});
      std::atomic<double> stored_at{0};
      std::jthread creator([&] {
        holder->get_or_create(key, [] {
          std::this_thread::sleep_for(5s);
          return std::string("made");
        });
        stored_at = now_ms();
      });
      std::this_thread::sleep_for(50ms);  // the holder has the lock
      proxy.reset_counts();
      Outcome outcome{};
      CHECK(waiter->get_or_create(
                key, [] { return std::string("second"); }, &outcome) == "made");
      const double seen_at = now_ms();
      creator.join();
      CHECK(outcome == Outcome::waited);
      // The first read and (classic) the lock attempt.
      const int polls =
          proxy.requests() - (dogpile::test::transport() == dogpile::test::Transport::meta ? 1 : 2);
      std::printf(
          "waiting on a 5 s creation, %s history: %d polls, value seen %.1f ms after it "
          "was stored\n",
          history ? "with" : "no", polls, seen_at - stored_at.load());
      // The meta transport's lease does not say when its holder started:
      // its waiter takes the length from the envelope it read and polls at
      // an even pace over it.
      CHECK(polls <= (history ? 20 : 60));
    }
  }

  TEST_CASE("a proxy that answers with another key's item: never served, reported") {
    MemcachedServer server;
    // Asked for bob, it fetches alice, and says the reply is bob's.
    Proxy mixup(
        server.port(),
        [](const std::string& line) {
          if (line.rfind("get", 0) != 0 && line.rfind("mg ", 0) != 0) return line;
          std::string out;
          std::size_t at = 0;
          while (at < line.size()) {  // the key "bob" only (its lock, "bob#L", is left alone)
            const auto end = std::min(line.find(' ', at), line.size());
            const std::string word = line.substr(at, end - at);
            out += (word == "bob" ? "alice" : word);
            if (end < line.size()) out += ' ';
            at = end + 1;
          }
          return out;
        },
        [](const std::string& line) {
          if (line.rfind("VALUE alice ", 0) == 0) return "VALUE bob " + line.substr(12);
          if (const auto k = line.find(" kalice"); k != std::string::npos) {  // a meta key echo
            return line.substr(0, k) + " kbob" + line.substr(k + 7);
          }
          return line;
        });
    CacheRegion direct(dogpile::test::memcached(server.options()), quiet({}));
    REQUIRE(direct.set("alice", std::string("alice's data")));
    auto region = region_through(mixup, {.expiration = 60s});
    std::atomic<int> decode_errors{0};
    region->set_error_handler([&](const dogpile::ErrorEvent& e) {
      if (e.kind == dogpile::ErrorKind::decode) decode_errors.fetch_add(1);
    });
    int wrong = 0;
    for (int i = 0; i < 30; ++i) {
      if (region->get_or_create("bob", [] { return std::string("bob's data"); }) != "bob's data") {
        ++wrong;
      }
    }
    CHECK(wrong == 0);
    CHECK_FALSE(region->get<std::string>("bob").has_value());
    CHECK(decode_errors.load() >= 30);
    std::printf(
        "a proxy answering bob's reads with alice's item: %d of 30 calls served "
        "another key's value, %d decode errors reported\n",
        wrong, decode_errors.load());
  }
}
