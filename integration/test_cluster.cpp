// SPDX-License-Identifier: MIT
// A three-node memcached cluster on loopback: keys spread by consistent
// hashing with each lock beside its value; a node killed, stalled and
// restarted under load; a throwing creator; hostile keys. Every test starts
// its own servers. With DOGPILE_TEST_CLUSTER=host:port,host:port,... (as in
// docker-compose.yml) the spread test runs against that cluster instead;
// the fault tests need to own their servers and do not run there.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/memcached.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Outcome;
using dogpile::RegionOptions;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;
using dogpile::test::quiet;

namespace {

struct Cluster {
  explicit Cluster(int n = 3) {
    for (int i = 0; i < n; ++i) nodes.push_back(std::make_unique<MemcachedServer>());
  }
  std::string config(const std::string& extra = "") const {
    std::string c;
    for (const auto& n : nodes) c += n->options() + " ";
    return c + extra;
  }
  // Which running node holds `backend_key` (-1: none).
  int node_of(const std::string& backend_key) const {
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i]->pid() <= 0) continue;  // killed
      if (nodes[i]->raw("get " + backend_key + "\r\n") != "END\r\n") return static_cast<int>(i);
    }
    return -1;
  }
  std::vector<std::unique_ptr<MemcachedServer>> nodes;
};

std::string value_for(std::string_view key) { return "value of " + std::string(key); }

// Keys whose values live on node `node` (found by storing candidates).
std::vector<std::string> keys_on(const Cluster& cluster, CacheRegion& region, int node,
                                 std::size_t count, const std::string& stem) {
  std::vector<std::string> found;
  for (int i = 0; found.size() < count && i < 10000; ++i) {
    const std::string key = stem + std::to_string(i);
    region.set(key, value_for(key));
    if (cluster.node_of(region.backend_key(key)) == node) found.push_back(key);
  }
  REQUIRE(found.size() == count);
  return found;
}

}  // namespace

TEST_SUITE("cluster") {
  TEST_CASE("keys spread over every node, and each key's lock sits on its value's node") {
    const char* external = std::getenv("DOGPILE_TEST_CLUSTER");
    std::unique_ptr<Cluster> local;
    std::string config;
    std::vector<std::string> endpoints;
    if (external != nullptr && *external != '\0') {
      std::stringstream list(external);
      for (std::string host; std::getline(list, host, ',');) {
        config += "--SERVER=" + host + " ";
        endpoints.push_back(host);
      }
    } else {
      local = std::make_unique<Cluster>();
      config = local->config();
    }
    auto backend = dogpile::test::memcached(config);
    CacheRegion region(backend, quiet({.expiration = 60s, .key_prefix = "spread:"}));
    for (int i = 0; i < 600; ++i) region.set("key" + std::to_string(i), std::string("v"));
    if (!local) {
      // An external cluster: every key reads back through the ring.
      for (int i = 0; i < 600; ++i)
        CHECK(region.get<std::string>("key" + std::to_string(i)) == "v");
      MESSAGE("ran against DOGPILE_TEST_CLUSTER=" << external);
      return;
    }
    std::vector<int> per_node(3, 0);
    for (int i = 0; i < 600; ++i) {
      const int node = local->node_of(region.backend_key("key" + std::to_string(i)));
      REQUIRE(node >= 0);
      ++per_node[node];
    }
    for (int n : per_node) CHECK(n > 600 / 3 / 2);  // consistent hashing spreads them: none near 0
    MESSAGE("600 keys over 3 nodes: " << per_node[0] << " / " << per_node[1] << " / "
                                      << per_node[2]);
    for (int i = 0; i < 30; ++i) {
      const std::string key = region.backend_key("key" + std::to_string(i));
      auto lock = backend->make_lock(key, 30s);
      REQUIRE(lock->try_lock());
      const int value_node = local->node_of(key);
      const int lock_node = local->node_of(key + "#L");
      CHECK(lock_node == value_node);
      lock->unlock();
    }
  }

  TEST_CASE("every pooled connection, and every process, agrees on each key's node") {
    Cluster cluster;
    auto writer = dogpile::test::memcached(cluster.config());
    {
      std::vector<std::jthread> threads;  // many threads: many pooled connections
      for (int t = 0; t < 16; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < 50; ++i) {
            writer->set("agree" + std::to_string(t * 50 + i), dogpile::Item{"v", 0}, 0s);
          }
        });
      }
    }
    auto reader = dogpile::test::memcached(cluster.config());  // another process's view of the ring
    for (int k = 0; k < 800; ++k) {
      const std::string key = "agree" + std::to_string(k);
      int holders = 0;
      for (const auto& node : cluster.nodes) {
        holders += node->raw("get " + key + "\r\n") != "END\r\n" ? 1 : 0;
      }
      CHECK_MESSAGE(holders == 1, key);
      CHECK_MESSAGE(reader->get(key).has_value(), key);
    }
  }

  TEST_CASE("a node killed under load and restarted: no exception, right values, hits again") {
    Cluster cluster;
    const std::string config = cluster.config("--RETRY-TIMEOUT=1");
    auto options = quiet({.expiration = 60s});
    CacheRegion region(dogpile::test::memcached(config), options);
    const auto doomed = keys_on(cluster, region, 1, 20, "doomed");
    const auto safe = keys_on(cluster, region, 0, 20, "safe");

    std::atomic<bool> stop{false};
    std::atomic<long> calls{0}, exceptions{0}, wrong{0};
    // Creations of each doomed key while its node is down (degraded mode
    // keeps them to one per key per expiration in this process).
    std::atomic<bool> down{false};
    std::array<std::atomic<int>, 20> down_creations{};
    std::vector<std::jthread> load;
    struct StopOnExit {  // declared after `load`: stops it before it is joined, however we leave
      std::atomic<bool>& stop;
      ~StopOnExit() { stop = true; }
    } stop_on_exit{stop};
    for (int t = 0; t < 8; ++t) {
      load.emplace_back([&, t] {
        for (int i = t; !stop.load(); ++i) {
          const bool on_doomed = i % 2 == 0;
          const auto& key = (on_doomed ? doomed : safe)[i % 20];
          auto create = [&] {
            if (on_doomed && down) down_creations[i % 20].fetch_add(1);
            return value_for(key);
          };
          try {
            if (region.get_or_create(key, create) != value_for(key)) ++wrong;
          } catch (...) {
            ++exceptions;
          }
          ++calls;
        }
      });
    }
    std::this_thread::sleep_for(300ms);
    down = true;
    const long calls_before = calls.load();
    cluster.nodes[1]->kill();
    std::this_thread::sleep_for(1000ms);

    // Herd protection still holds for a key on a surviving node, across
    // "processes": two more regions, each with its own connections and
    // flights, share only memcached with each other. (Threads rather than
    // forked processes: this process already runs the load's threads.)
    const std::string herd_key = keys_on(cluster, region, 2, 1, "herd")[0];
    region.remove(herd_key);
    std::atomic<int> creators{0};
    std::atomic<int> ready{0};
    {
      std::mutex log_mutex;
      std::vector<std::string> log;
      auto logging = options;
      logging.on_error = [&](const dogpile::ErrorEvent& e) {
        std::lock_guard lock(log_mutex);
        log.push_back(std::string(e.operation) + " " + std::string(e.key) + ": " +
                      std::string(e.message));
      };
      CacheRegion first(dogpile::test::memcached(config), logging);
      CacheRegion second(dogpile::test::memcached(config), logging);
      std::vector<std::jthread> herd;
      for (int t = 0; t < 16; ++t) {
        herd.emplace_back([&, t] {
          CacheRegion& mine = t % 2 == 0 ? first : second;
          (void)mine.get<std::string>("warm-up");
          ready.fetch_add(1);
          while (ready.load() < 16) std::this_thread::yield();
          mine.get_or_create(herd_key, [&] {
            creators.fetch_add(1);
            std::this_thread::sleep_for(100ms);
            return value_for(herd_key);
          });
        });
      }
      herd.clear();
      CHECK_MESSAGE(
          creators.load() == 1,
          "first: created " << first.stats().created << " waited " << first.stats().waited
                            << " lock_waits " << first.stats().lock_waits << " errors "
                            << first.stats().backend_errors << "; second: created "
                            << second.stats().created << " waited " << second.stats().waited
                            << " lock_waits " << second.stats().lock_waits << " errors "
                            << second.stats().backend_errors << " lock_errors "
                            << second.stats().lock_errors << " degraded " << first.stats().degraded
                            << "+" << second.stats().degraded << " log: " << [&] {
                                 std::string all;
                                 for (auto& l : log) all += l + " | ";
                                 return all;
                               }());
    }

    const long calls_while_down = calls.load() - calls_before;
    int most_down_creations = 0;
    for (const auto& n : down_creations)
      most_down_creations = std::max(most_down_creations, n.load());
    down = false;
    cluster.nodes[1]->restart();
    const double restarted = now_ms();
    Outcome outcome{};
    bool hit = false;  // fresh from memcached, not from what the process kept
    while (now_ms() - restarted < 5000) {
      const auto kept_before = region.stats().kept_served;
      region.get_or_create(
          doomed[0], [&] { return value_for(doomed[0]); }, &outcome);
      hit = outcome == Outcome::fresh && region.stats().kept_served == kept_before;
      if (hit) break;
      std::this_thread::sleep_for(20ms);
    }
    const double back_after = now_ms() - restarted;
    stop = true;
    load.clear();
    CHECK(hit);
    CHECK(most_down_creations <= 1);  // one per key per expiration (60 s) in this process
    CHECK(exceptions.load() == 0);
    CHECK(wrong.load() == 0);
    CHECK(calls.load() > 100);
    CHECK(region.stats().degraded > 0);  // the dead node's keys fell back to in-process protection
    std::printf(
        "node killed under load: %ld calls, 0 exceptions; while it was down, %ld calls and at "
        "most %d creation per key of its 20; hits on its keys again %.0f ms after restart "
        "(--RETRY-TIMEOUT=1)\n",
        calls.load(), calls_while_down, most_down_creations, back_after);
  }

  TEST_CASE("a stalled node (SIGSTOP): callers are released within the timeouts") {
    Cluster cluster;
    const std::string config =
        cluster.config("--POLL-TIMEOUT=200 --CONNECT-TIMEOUT=200 --RETRY-TIMEOUT=1");
    CacheRegion region(dogpile::test::memcached(config), quiet({.expiration = 60s}));
    const auto stalled = keys_on(cluster, region, 1, 8, "stalled");
    const auto fine = keys_on(cluster, region, 2, 8, "fine");
    cluster.nodes[1]->pause();
    std::atomic<int> wrong{0};
    std::vector<double> slowest(16, 0.0);
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < 16; ++t) {
        threads.emplace_back([&, t] {
          const auto& key = (t < 8 ? stalled : fine)[t % 8];
          for (int i = 0; i < 5; ++i) {
            const double start = now_ms();
            if (region.get_or_create(key, [&] { return value_for(key); }) != value_for(key))
              ++wrong;
            slowest[t] = std::max(slowest[t], now_ms() - start);
          }
        });
      }
    }
    cluster.nodes[1]->resume();
    double worst_stalled = 0, worst_fine = 0;
    for (int t = 0; t < 16; ++t)
      (t < 8 ? worst_stalled : worst_fine) =
          std::max(t < 8 ? worst_stalled : worst_fine, slowest[t]);
    CHECK(wrong.load() == 0);
    // A call meets at most a get and a set that time out (200 ms each); then
    // the node is marked dead and calls fail fast. The bound leaves room for
    // a loaded machine.
    CHECK(worst_stalled < 1500);
    std::printf(
        "stalled node: slowest call %.0f ms on its keys, %.0f ms on others "
        "(--POLL-TIMEOUT=200)\n",
        worst_stalled, worst_fine);
  }

  TEST_CASE("auto_eject: a dead node's keys move to the others") {
    Cluster cluster;
    CacheRegion region(
        dogpile::test::memcached(cluster.config("--RETRY-TIMEOUT=30 --CONNECT-TIMEOUT=300"), true),
        quiet({.expiration = 60s}));
    const auto moved = keys_on(cluster, region, 0, 5, "moved");
    cluster.nodes[0]->kill();
    // Until the node is ejected its keys' reads fail, and a value made then
    // is kept in process (degraded mode); once ejected, the key's value is
    // made again and stored on a live node, and read from there.
    int attempts = 0;
    int now_on = -1;
    for (; attempts < 50 && now_on < 0; ++attempts) {
      region.get_or_create(moved[0], [&] { return value_for(moved[0]); });
      now_on = cluster.node_of(region.backend_key(moved[0]));
    }
    CHECK_MESSAGE((now_on == 1 || now_on == 2), "on node " << now_on << " after " << attempts);
    const auto served_before = region.stats().kept_served;
    Outcome outcome{};
    region.get_or_create(
        moved[0], [&] { return value_for(moved[0]); }, &outcome);
    CHECK(outcome == Outcome::fresh);  // read from the live node, not from what was kept
    CHECK(region.stats().kept_served == served_before);
  }

  TEST_CASE("auto_eject: a restarted node takes its keys back after the retry interval") {
    Cluster cluster;
    CacheRegion region(
        dogpile::test::memcached(cluster.config("--RETRY-TIMEOUT=1 --CONNECT-TIMEOUT=300"), true),
        quiet({.expiration = 60s}));
    const auto keys = keys_on(cluster, region, 0, 5, "back");
    cluster.nodes[0]->kill();
    for (int i = 0; i < 20; ++i) {  // ejected: the keys live elsewhere meanwhile
      for (const auto& k : keys) region.get_or_create(k, [&] { return value_for(k); });
    }
    cluster.nodes[0]->restart();
    const double restarted = now_ms();
    // Back when a key's value is made again on node 0 and read from there.
    bool back = false;
    while (!back && now_ms() - restarted < 5000) {
      region.get_or_create(keys[0], [&] { return value_for(keys[0]); });
      back = cluster.node_of(region.backend_key(keys[0])) == 0;
      if (!back) std::this_thread::sleep_for(20ms);
    }
    const double after = now_ms() - restarted;
    CHECK_MESSAGE(back, "node 0 never took its keys back");
    CHECK(after < 2000);  // the retry interval (1 s) and a second
    std::printf("auto_eject: a restarted node took its keys back after %.0f ms (retry 1 s)\n",
                after);
  }

  TEST_CASE("a creator that throws: its flight's callers get the error, the lock is free at once") {
    Cluster cluster(1);
    CacheRegion region(dogpile::test::memcached(cluster.config()), quiet({.expiration = 60s}));
    std::atomic<int> creators{0}, errors{0};
    std::atomic<int> started{0};
    {
      std::vector<std::jthread> threads;
      for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
          started.fetch_add(1);
          while (started.load() < 8) std::this_thread::yield();
          try {
            region.get_or_create("failing", [&]() -> std::string {
              creators.fetch_add(1);
              std::this_thread::sleep_for(100ms);
              throw std::runtime_error("upstream down");
            });
          } catch (const std::runtime_error& e) {
            if (std::string(e.what()) == "upstream down") errors.fetch_add(1);
          }
        });
      }
    }
    CHECK(errors.load() == 8);
    CHECK(creators.load() >= 1);
    // Callers that arrived after the flight ended start their own: never two at once,
    // and never a creator that waited for a lock a failed creator left behind.
    const std::string lock_key = region.backend_key("failing") + "#L";
    CHECK(cluster.nodes[0]->raw("get " + lock_key + "\r\n") == "END\r\n");
    CHECK(region.get_or_create("failing", [] { return std::string("recovered"); }) == "recovered");
  }

  TEST_CASE("hostile keys on memcached: each stored and read back apart, nothing injected") {
    Cluster cluster(1);
    CacheRegion region(dogpile::test::memcached(cluster.config()), quiet({.expiration = 60s}));
    std::vector<std::string> keys = {"",
                                     " ",
                                     "with space",
                                     "x\r\nflush_all\r\n",
                                     "x\r\ndelete canary\r\n",
                                     std::string("nul\0inside", 10),
                                     "tab\tand\vvertical\fform",
                                     "\x01\x02\x1f\x7f",
                                     "\xff\xfe\xc3\x28 invalid utf-8",
                                     "caf\xc3\xa9",
                                     std::string(10 * 1024, 'k'),
                                     std::string(10 * 1024, 'k') + "!",
                                     "#",
                                     "a#L"};
    for (int b = 0; b < 256; ++b) {
      const std::string one(1, static_cast<char>(b));
      if (std::find(keys.begin(), keys.end(), one) == keys.end()) keys.push_back(one);
    }
    region.set("canary", std::string("alive"));
    for (std::size_t i = 0; i < keys.size(); ++i) {
      CHECK(region.get_or_create(keys[i], [i] { return std::to_string(i); }) == std::to_string(i));
    }
    std::set<std::string> backend_keys;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      CHECK(region.get<std::string>(keys[i]) == std::to_string(i));
      backend_keys.insert(region.backend_key(keys[i]));
    }
    CHECK(backend_keys.size() == std::set<std::string>(keys.begin(), keys.end()).size());
    CHECK(region.get<std::string>("canary") == "alive");
    const auto stats = cluster.nodes[0]->stats();
    CHECK(stats.at("cmd_flush") == 0);
    CHECK(stats.at("delete_hits") + stats.at("delete_misses") == 0);
  }
}
