// SPDX-License-Identifier: MIT
// fork() after use on real memcached (SPEC I1), both transports: a pre-fork
// server's master warms the cache, then its children hammer it; a child's
// slow creator keeps its lock. Built and run without sanitizers only
// (dogpile_fork_tests): ThreadSanitizer cannot follow a process with threads
// across fork(), and AddressSanitizer's allocator can deadlock in a child
// forked while another thread allocates.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "../tests/processes.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::test::backend_for;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;
using dogpile::test::quiet;

TEST_SUITE("fork after use") {
  TEST_CASE("fork() after use: parent and children hammer distinct keys, never another's value") {
    MemcachedServer server;
    struct Shared {
      std::atomic<long> calls{0};
      std::atomic<long> wrong{0};
      std::atomic<long> failures{0};
    };
    dogpile::test::Shared<Shared> shared;
    // A pre-fork server: the master warms the cache through its region (its
    // pooled connections and its threads in use), then forks workers.
    CacheRegion region(backend_for(server), quiet({.expiration = 60s, .background_refresh = true}));
    for (int i = 0; i < 50; ++i) {
      region.get_or_create("master:" + std::to_string(i),
                           [i] { return "master:" + std::to_string(i); });
    }
    auto hammer = [&](const std::string& who) {
      const auto until = now_ms() + 1500;
      std::vector<std::jthread> threads;
      for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
          for (long n = 0; now_ms() < until; ++n) {
            const std::string key = who + ":" + std::to_string((n * 4 + t) % 50);
            try {
              const std::string v = region.get_or_create(key, [&] { return key; });
              if (v != key) shared->wrong.fetch_add(1);
            } catch (...) {
              shared->failures.fetch_add(1);
            }
            shared->calls.fetch_add(1);
          }
        });
      }
    };
    std::vector<pid_t> children;
    for (int c = 0; c < 2; ++c) {
      children.push_back(dogpile::test::fork_worker([&, c] {
        hammer("child" + std::to_string(c));
        return 0;  // and the region is destroyed as the child exits
      }));
    }
    hammer("master");
    for (pid_t pid : children) CHECK(dogpile::test::wait_worker_within(pid, 60s) == 0);
    std::printf(
        "fork after use: %ld calls in a parent and 2 children on distinct keys, %ld "
        "returned another key's value, %ld threw\n",
        shared->calls.load(), shared->wrong.load(), shared->failures.load());
    CHECK(shared->calls.load() > 1000);
    CHECK(shared->wrong.load() == 0);
    CHECK(shared->failures.load() == 0);
    CHECK(region.get_or_create("master:7", [] { return std::string("x"); }) == "master:7");
  }

  TEST_CASE("fork() after use: a child slow creator keeps its lock, no second creator elsewhere") {
    MemcachedServer server;
    struct Shared {
      std::atomic<int> creators{0};
    };
    dogpile::test::Shared<Shared> shared;
    const auto options = quiet({.expiration = 60s, .lock_timeout = 2s});
    CacheRegion region(backend_for(server), options);
    region.get_or_create("warm", [] { return std::string("v"); });  // used before the fork
    const pid_t child = dogpile::test::fork_worker([&] {
      region.get_or_create("slow", [&] {
        shared->creators.fetch_add(1);
        std::this_thread::sleep_for(4500ms);  // over twice the lock's time to live
        return std::string("from the child");
      });
      return 0;
    });
    while (shared->creators.load() == 0) std::this_thread::sleep_for(1ms);
    CacheRegion other(backend_for(server), options);
    const std::string v = other.get_or_create("slow", [&] {
      shared->creators.fetch_add(1);
      return std::string("second creator");
    });
    CHECK(dogpile::test::wait_worker_within(child, 60s) == 0);
    CHECK(v == "from the child");
    CHECK(shared->creators.load() == 1);
  }
}
