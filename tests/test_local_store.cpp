// The store of values a region keeps in process (internal): bounds, expiry,
// least-recently-used eviction.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "../lib/local_store.hpp"

using namespace std::chrono_literals;
using dogpile::Item;
using dogpile::SteadyTime;
using dogpile::detail::LocalStore;

namespace {

std::shared_ptr<const Item> item(std::string data) {
  return std::make_shared<const Item>(Item{std::move(data), 0});
}

}  // namespace

TEST_SUITE("local store") {
  TEST_CASE("an item is kept until its time, then gone") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put("k", item("v"), t0 + 10s);
    REQUIRE(store.get("k", t0 + 9s) != nullptr);
    CHECK(store.get("k", t0 + 9s)->data == "v");
    CHECK(store.get("k", t0 + 10s) == nullptr);
    CHECK(store.entries() == 0);  // dropped when found expired
  }

  TEST_CASE("put replaces, erase and clear remove") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put("k", item("one"), t0 + 10s);
    store.put("k", item("two"), t0 + 10s);
    CHECK(store.entries() == 1);
    CHECK(store.get("k", t0)->data == "two");
    store.erase("k");
    CHECK(store.get("k", t0) == nullptr);
    store.put("a", item("1"), t0 + 10s);
    store.put("b", item("2"), t0 + 10s);
    store.clear();
    CHECK(store.entries() == 0);
    CHECK(store.bytes() == 0);
  }

  TEST_CASE("bounded by entries: 100,000 keys keep at most the bound") {
    LocalStore store(1600, std::size_t{1} << 30);
    const SteadyTime t0{};
    for (int i = 0; i < 100'000; ++i) store.put("key:" + std::to_string(i), item("v"), t0 + 1h);
    CHECK(store.entries() <= 1600);
    CHECK(store.entries() >= 1500);  // every shard full, give or take the hash's spread
  }

  TEST_CASE("bounded by bytes: large items push the least recently used out") {
    const std::size_t bound = 16 * 64 * 1024;  // 64 KiB a shard
    LocalStore store(1'000'000, bound);
    const SteadyTime t0{};
    for (int i = 0; i < 1000; ++i) {
      store.put("big:" + std::to_string(i), item(std::string(10'000, 'x')), t0 + 1h);
    }
    CHECK(store.bytes() <= bound);
    CHECK(store.entries() <= 16 * 6);  // six 10 KB items fit a 64 KiB shard
    // An item larger than a shard's share is not kept at all.
    store.put("huge", item(std::string(100'000, 'x')), t0 + 1h);
    CHECK(store.get("huge", t0) == nullptr);
  }

  TEST_CASE("the least recently used item goes first") {
    LocalStore store(16 * 2, std::size_t{1} << 30);  // two entries a shard
    const SteadyTime t0{};
    // Three keys of one shard: find them by trying (the shard is the hash's).
    std::vector<std::string> same;
    for (int i = 0; same.size() < 3; ++i) {
      const std::string key = "k" + std::to_string(i);
      if (same.empty() || std::hash<std::string_view>{}(key) % 16 ==
                              std::hash<std::string_view>{}(same.front()) % 16) {
        same.push_back(key);
      }
    }
    store.put(same[0], item("0"), t0 + 1h);
    store.put(same[1], item("1"), t0 + 1h);
    CHECK(store.get(same[0], t0) != nullptr);  // used: now the most recent
    store.put(same[2], item("2"), t0 + 1h);    // the shard is full: same[1] goes
    CHECK(store.get(same[0], t0) != nullptr);
    CHECK(store.get(same[1], t0) == nullptr);
    CHECK(store.get(same[2], t0) != nullptr);
  }

  TEST_CASE("no entries: nothing is kept") {
    LocalStore store(0, 1 << 20);
    store.put("k", item("v"), SteadyTime{} + 1h);
    CHECK(store.get("k", SteadyTime{}) == nullptr);
  }
}
