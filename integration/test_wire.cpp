// What crosses the wire, counted by a proxy between the library and a real
// memcached: the requests of each path (README "Requests per call"), the
// polls of a waiting process, and a proxy that answers with another key's
// item (SPEC I1).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/memcached.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "proxy.hpp"
#include "quiet.hpp"

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
    MemcachedServer server;
    Proxy proxy(server.port());
    auto region = region_through(proxy, {.expiration = 10s});
    auto other = region_through(proxy, {.expiration = 10s});
    struct Cost {
      int requests;
      int round_trips;
    };
    auto cost = [&](auto call) {
      proxy.reset_counts();
      call();
      return Cost{proxy.requests(), proxy.round_trips()};
    };
    std::printf("requests (round trips) per call on the %s transport, counted on the wire:\n",
                meta ? "meta" : "classic");
    auto show = [](const char* path, Cost c, const char* what) {
      std::printf("  %-44s %d (%d): %s\n", path, c.requests, c.round_trips, what);
    };

    const Cost cold =
        cost([&] { region->get_or_create("cold", [] { return std::string("v"); }); });
    show("cold, this caller creates:", cold,
         meta ? "mg N (won), ms C" : "gets, add lock, gets value+lock, add value, cas lock");
    CHECK(cold.requests == (meta ? 2 : 5));
    CHECK(cold.round_trips == cold.requests);

    const Cost fresh =
        cost([&] { region->get_or_create("cold", [] { return std::string("x"); }); });
    show("fresh hit:", fresh, meta ? "mg" : "gets");
    CHECK(fresh.requests == 1);
    CHECK(fresh.round_trips == 1);
    CHECK(proxy.counts()[meta ? "mg" : "gets"] == 1);

    // A value past its expiration on the server's clock too (its time to
    // live below the stale grace): written for real, then left to age.
    auto short_lived = region_through(proxy, {.expiration = 1s, .stale_grace = 30s});
    short_lived->get_or_create("stale", [] { return std::string("old"); });
    short_lived->get_or_create("held", [] { return std::string("old"); });
    std::this_thread::sleep_for(2100ms);
    const Cost stale_winner =
        cost([&] { short_lived->get_or_create("stale", [] { return std::string("new"); }); });
    show("stale, this caller regenerates:", stale_winner,
         meta ? "mg R (won), ms C" : "gets, add lock, gets value+lock, cas value, cas lock");
    CHECK(stale_winner.requests == (meta ? 2 : 5));

    // Stale while another process holds the lease.
    auto elsewhere = dogpile::test::memcached(server.options());
    dogpile::LeaseSlot held[1];
    const std::string held_key = short_lived->backend_key("held");
    held[0].key = held_key;
    dogpile::LeaseRequest request;
    request.ttl = 30s;
    elsewhere->claim(held, request);
    REQUIRE(held[0].lease == dogpile::LeaseState::won);
    auto reader = region_through(proxy, {.expiration = 1s, .stale_grace = 30s});
    const Cost first =
        cost([&] { reader->get_or_create("held", [] { return std::string("n"); }); });
    std::vector<Cost> later;
    for (int i = 0; i < 5; ++i) {
      later.push_back(
          cost([&] { reader->get_or_create("held", [] { return std::string("n"); }); }));
    }
    show("stale, another process regenerating:", first,
         meta ? "mg (held), the stale value" : "gets, add lock (held), the stale value");
    show("  ... and the next calls:", later[0],
         meta ? "mg" : "gets (the holder is remembered)");
    CHECK(first.requests == (meta ? 1 : 2));
    for (const Cost& c : later) CHECK(c.requests == 1);
    elsewhere->release(held);

    std::vector<std::string> keys;
    for (int i = 0; i < 100; ++i) keys.push_back("multi" + std::to_string(i));
    region->get_or_create_multi(
        keys, [](auto missing) { return std::vector<std::string>(missing.size(), "v"); });
    const Cost multi = cost([&] {
      region->get_or_create_multi(
          keys, [](auto missing) { return std::vector<std::string>(missing.size(), "w"); });
    });
    show("100 fresh keys on one server (multi):", multi,
         meta ? "100 mg q + mn, one pipeline" : "one gets of 100 keys");
    CHECK(multi.round_trips == 1);
    CHECK(multi.requests == (meta ? 101 : 1));
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
      const int polls = proxy.requests() -
                        (dogpile::test::transport() == dogpile::test::Transport::meta ? 1 : 2);
      std::printf(
          "waiting on a 5 s creation, %s history: %d polls, value seen %.1f ms after it "
          "was stored\n",
          history ? "with" : "no", polls, seen_at - stored_at.load());
      // The meta transport's lease does not say when its holder started or
      // what it expects: its waiters poll on the schedule without history.
      const bool knows = history && dogpile::test::transport() == dogpile::test::Transport::classic;
      CHECK(polls <= (knows ? 20 : 60));
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
