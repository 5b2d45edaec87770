// SPDX-License-Identifier: MIT
// Both transports put every key on the same server: the meta transport's
// ketama ring against libmemcached's own choice, key for key, and values
// written by one transport read by the other on a real three-node cluster.
#include <doctest/doctest.h>
#include <libmemcached/memcached.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "memcached_server.hpp"
#include "transport/ketama.hpp"

using dogpile::detail::KetamaRing;
using dogpile::detail::RingServer;

namespace {

// How many of `keys` libmemcached (weighted ketama, as MemcachedBackend
// configures it) and KetamaRing place on the same server.
int agreeing(const std::vector<RingServer>& servers, int keys) {
  std::string options;
  for (const auto& s : servers) {
    options += "--SERVER=" + s.host + ":" + std::to_string(s.port) +
               (s.weight == 1 ? std::string() : "/?" + std::to_string(s.weight)) + " ";
  }
  options.pop_back();
  std::unique_ptr<memcached_st, decltype(&memcached_free)> mc(
      memcached(options.data(), options.size()), &memcached_free);
  REQUIRE(mc != nullptr);
  REQUIRE(memcached_behavior_set(mc.get(), MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) ==
          MEMCACHED_SUCCESS);
  const KetamaRing ring(servers);
  int same = 0;
  for (int k = 0; k < keys; ++k) {
    const std::string key = "user:" + std::to_string(k * 7919) + ":profile";
    memcached_return_t rc;
    const memcached_instance_st* chosen =
        memcached_server_by_key(mc.get(), key.data(), key.size(), &rc);
    REQUIRE(chosen != nullptr);
    const RingServer& mine = servers[ring.server_for(key)];
    if (mine.host == memcached_server_name(chosen) && mine.port == memcached_server_port(chosen)) {
      ++same;
    }
  }
  return same;
}

}  // namespace

TEST_SUITE("placement") {
  TEST_CASE("ketama: the meta transport places 100,000 keys as libmemcached does") {
    const std::vector<std::vector<RingServer>> fleets = {
        {{"10.0.0.1", 11211, 1}, {"10.0.0.2", 11211, 1}, {"10.0.0.3", 11211, 1}},
        {{"cache-a.internal", 11211, 1},
         {"cache-b.internal", 11212, 1},
         {"10.1.0.7", 11211, 1},
         {"10.1.0.8", 21211, 1},
         {"127.0.0.1", 11311, 1}},
        {{"10.0.0.1", 11211, 1}, {"10.0.0.2", 11211, 2}, {"10.0.0.3", 11211, 3}},
        {{"10.2.0.1", 11211, 1},
         {"10.2.0.2", 11211, 2},
         {"10.2.0.3", 11211, 3},
         {"10.2.0.4", 11211, 4},
         {"10.2.0.5", 11211, 15}},
    };
    for (const auto& fleet : fleets) {
      CAPTURE(fleet.size());
      CAPTURE(fleet.back().weight);
      const int same = agreeing(fleet, 100'000);
      std::printf("ketama, %zu servers (last weight %u): %d of 100000 keys on the same server\n",
                  fleet.size(), fleet.back().weight, same);
      CHECK(same == 100'000);
    }
  }

  TEST_CASE("a three-node cluster: what one transport writes, the other reads") {
    std::vector<std::unique_ptr<dogpile::test::MemcachedServer>> nodes;
    std::string options;
    for (int i = 0; i < 3; ++i) {
      nodes.push_back(std::make_unique<dogpile::test::MemcachedServer>());
      options += nodes.back()->options() + " ";
    }
    dogpile::MemcachedBackend classic(options);
    dogpile::MemcachedMetaBackend meta(options);
    int read_back = 0;
    for (int k = 0; k < 1000; ++k) {
      const std::string key = "moved:" + std::to_string(k);
      (k % 2 == 0 ? static_cast<dogpile::Backend&>(classic) : meta)
          .set(key, dogpile::Item{key, 1}, std::chrono::seconds(60));
    }
    for (int k = 0; k < 1000; ++k) {
      const std::string key = "moved:" + std::to_string(k);
      auto item = (k % 2 == 0 ? static_cast<dogpile::Backend&>(meta) : classic).get(key);
      if (item && item->data == key) ++read_back;
    }
    std::vector<std::int64_t> items;
    for (const auto& n : nodes) items.push_back(n->stats().at("curr_items"));
    std::printf(
        "1000 keys written by one transport, read by the other: %d; items per node %lld "
        "%lld %lld\n",
        read_back, static_cast<long long>(items[0]), static_cast<long long>(items[1]),
        static_cast<long long>(items[2]));
    CHECK(read_back == 1000);
    for (auto n : items) CHECK(n > 200);  // spread, not all on one node
  }
}
