// SPDX-License-Identifier: MIT
// The store of values a region keeps in process (internal): bounds, expiry,
// least-recently-used eviction, admission, the threads' fronts.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/local_store.hpp"

using namespace std::chrono_literals;
using dogpile::Item;
using dogpile::SteadyTime;
using dogpile::detail::LocalStore;

namespace {

std::shared_ptr<const Item> item(std::string data) {
  return std::make_shared<const Item>(Item{std::move(data), 0});
}

// `n` keys of one shard, found by trying (the shard is the hash's).
std::vector<std::string> keys_of_one_shard(std::size_t n) {
  std::vector<std::string> same;
  for (int i = 0; same.size() < n; ++i) {
    const std::string key = "k" + std::to_string(i);
    if (same.empty() || std::hash<std::string_view>{}(key) % 16 ==
                            std::hash<std::string_view>{}(same.front()) % 16) {
      same.push_back(key);
    }
  }
  return same;
}

}  // namespace

TEST_SUITE("local store") {
  TEST_CASE("an item is kept until its time, then gone") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put_written("k", item("v"), t0 + 10s);
    REQUIRE(store.get("k", t0 + 9s) != nullptr);
    CHECK(store.get("k", t0 + 9s)->data == "v");
    CHECK(store.get("k", t0 + 10s) == nullptr);
    CHECK(store.entries() == 0);  // dropped when found expired
  }

  TEST_CASE("an item read with a version outlives its time for a check, and is renewed") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put_read("k", item("v"), t0, t0 + 1s, store.writes("k"), 42);
    CHECK(store.expired("k", t0 + 999ms).item == nullptr);  // not yet past its time
    CHECK(store.get("k", t0 + 1s) == nullptr);              // past it: not served...
    const auto old = store.expired("k", t0 + 1s);           // ...but kept, with its version
    REQUIRE(old.item != nullptr);
    CHECK(old.version == 42);
    CHECK(store.renew("k", old.item.get(), t0 + 2s));
    REQUIRE(store.get("k", t0 + 1500ms) != nullptr);
    CHECK(store.get("k", t0 + 1500ms)->data == "v");
    // Replaced meanwhile (a write): the old item is not renewed.
    store.put_written("k", item("w"), t0 + 10s);
    CHECK_FALSE(store.renew("k", old.item.get(), t0 + 20s));
    CHECK(store.get("k", t0 + 15s) == nullptr);
    // Without a version, an item is dropped at its time, as before.
    store.put_read("n", item("v"), t0, t0 + 1s, store.writes("n"));
    CHECK(store.get("n", t0 + 1s) == nullptr);
    CHECK(store.expired("n", t0 + 1s).item == nullptr);
  }

  TEST_CASE("put replaces, erase and clear remove") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put_written("k", item("one"), t0 + 10s);
    store.put_written("k", item("two"), t0 + 10s);
    CHECK(store.entries() == 1);
    CHECK(store.get("k", t0)->data == "two");
    store.erase("k");
    CHECK(store.get("k", t0) == nullptr);
    store.put_written("a", item("1"), t0 + 10s);
    store.put_written("b", item("2"), t0 + 10s);
    store.clear();
    CHECK(store.entries() == 0);
    CHECK(store.bytes() == 0);
  }

  TEST_CASE("bounded by entries: 100,000 keys keep at most the bound") {
    LocalStore store(1600, std::size_t{1} << 30);
    const SteadyTime t0{};
    for (int i = 0; i < 100'000; ++i)
      store.put_written("key:" + std::to_string(i), item("v"), t0 + 1h);
    CHECK(store.entries() <= 1600);
    CHECK(store.entries() >= 1500);  // every shard full, give or take the hash's spread
  }

  TEST_CASE("bounded by bytes: large items push the least recently used out") {
    const std::size_t bound = 16 * 64 * 1024;  // 64 KiB a shard
    LocalStore store(1'000'000, bound);
    const SteadyTime t0{};
    for (int i = 0; i < 1000; ++i) {
      store.put_written("big:" + std::to_string(i), item(std::string(10'000, 'x')), t0 + 1h);
    }
    CHECK(store.bytes() <= bound);
    CHECK(store.entries() <= 16 * 6);  // six 10 KB items fit a 64 KiB shard
    // An item larger than a shard's share is not kept at all.
    store.put_written("huge", item(std::string(100'000, 'x')), t0 + 1h);
    CHECK(store.get("huge", t0) == nullptr);
  }

  TEST_CASE("the least recently used item goes first") {
    LocalStore store(16 * 2, std::size_t{1} << 30);  // two entries a shard
    const SteadyTime t0{};
    const auto same = keys_of_one_shard(3);
    store.put_written(same[0], item("0"), t0 + 1h);
    store.put_written(same[1], item("1"), t0 + 1h);
    CHECK(store.get(same[0], t0) != nullptr);        // used: now the most recent
    store.put_written(same[2], item("2"), t0 + 1h);  // the shard is full: same[1] goes
    CHECK(store.get(same[0], t0) != nullptr);
    CHECK(store.get(same[1], t0) == nullptr);
    CHECK(store.get(same[2], t0) != nullptr);
  }

  TEST_CASE("no entries: nothing is kept") {
    LocalStore store(0, 1 << 20);
    store.put_written("k", item("v"), SteadyTime{} + 1h);
    CHECK(store.get("k", SteadyTime{}) == nullptr);
  }

  TEST_CASE("a fill that read before a write is dropped, one that read after is kept") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    // A reader notes the writes, then reads the backend (the old value)...
    const auto seen = store.writes("k");
    // ...meanwhile this process removes the key (erase after the backend's
    // write) ...
    store.erase("k");
    // ...and the reader's fill comes late: dropped.
    store.put_read("k", item("old"), t0, t0 + 10s, seen);
    CHECK(store.get("k", t0) == nullptr);
    // A fill with no write since its read is kept.
    store.put_read("k", item("new"), t0, t0 + 10s, store.writes("k"));
    REQUIRE(store.get("k", t0) != nullptr);
    CHECK(store.get("k", t0)->data == "new");
  }

  TEST_CASE("a slower fill does not replace a faster one, and discard makes room for the next") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    const auto seen = store.writes("k");
    store.put_read("k", item("newer"), t0, t0 + 10s, seen);  // made and stored here
    store.put_read("k", item("older"), t0, t0 + 10s, seen);  // read before that store
    CHECK(store.get("k", t0)->data == "newer");
    // Once past its time, an entry is no obstacle.
    store.put_read("k", item("later"), t0 + 10s, t0 + 20s, store.writes("k"));
    CHECK(store.get("k", t0 + 10s)->data == "later");
    // discard drops only the item it was given.
    const auto later = store.get("k", t0 + 10s);
    store.discard("k", item("other").get());
    CHECK(store.get("k", t0 + 10s) == later);
    store.discard("k", later.get());
    CHECK(store.get("k", t0 + 10s) == nullptr);
    store.put_read("k", item("fresh"), t0 + 10s, t0 + 20s, store.writes("k"));
    CHECK(store.get("k", t0 + 10s)->data == "fresh");
  }

  // A caller looks a key up, then fills it on a miss: as the engine does.
  TEST_CASE(
      "frequency admission: a scan of keys asked for once leaves the hot ones, LRU does not") {
    for (const bool admission : {true, false}) {
      CAPTURE(admission);
      LocalStore store(320, 64 << 20, admission);  // 20 per shard
      const SteadyTime t0{};
      auto call = [&](const std::string& key) {
        if (store.get(key, t0) != nullptr) return true;
        store.put_read(key, item("v"), t0, t0 + 1h, store.writes(key));
        return false;
      };
      // Rounds of 100 hot keys, each round followed by 500 keys asked for
      // once (31 a shard: more than it holds).
      int hot_hits = 0;
      for (int round = 0; round < 20; ++round) {
        for (int k = 0; k < 100; ++k) {
          const bool hit = call("hot" + std::to_string(k));
          if (round >= 5 && hit) ++hot_hits;
        }
        for (int k = 0; k < 500; ++k) call("once" + std::to_string(round * 500 + k));
      }
      CAPTURE(hot_hits);
      if (admission) {
        CHECK(hot_hits >= 1'450);  // of 1,500
      } else {
        CHECK(hot_hits < 150);  // a shard now and then got fewer of the scan
      }
      CHECK(store.entries() <= 320);
    }
  }

  TEST_CASE("frequency admission: a key asked for more than the victim goes in, a colder one not") {
    LocalStore store(16, 64 << 20, true);  // one per shard
    const SteadyTime t0{};
    // Two keys of one shard: find them.
    const std::string first = "a";
    std::string second;
    for (int i = 0; second.empty(); ++i) {
      const std::string k = "b" + std::to_string(i);
      LocalStore probe(16, 64 << 20);
      probe.put_written(first, item("v"), t0 + 1h);
      probe.put_written(k, item("v"), t0 + 1h);
      if (probe.get(first, t0) == nullptr) second = k;  // it evicted `first`: one shard
    }
    (void)store.get(first, t0);
    store.put_read(first, item("1"), t0, t0 + 1h, store.writes(first));
    (void)store.get(second, t0);  // asked once, as often as `first`: not admitted
    store.put_read(second, item("2"), t0, t0 + 1h, store.writes(second));
    CHECK(store.get(second, t0) == nullptr);   // asked a second time now
    REQUIRE(store.get(first, t0) != nullptr);  // and `first` a second
    CHECK(store.frequency(first) == 2);
    for (int i = 0; i < 3; ++i) (void)store.get(second, t0);
    CHECK(store.frequency(second) == 5);
    store.put_read(second, item("2"), t0, t0 + 1h, store.writes(second));
    CHECK(store.get(second, t0) != nullptr);  // hotter than `first`: in
    CHECK(store.get(first, t0) == nullptr);
    // This process's own writes go in whatever the counts.
    store.put_written("c", item("3"), t0 + 1h);
    CHECK(store.entries() >= 1);
  }

  TEST_CASE("frequency admission: counts saturate at 15 and halve as lookups go on") {
    LocalStore store(160, 64 << 20, true);  // 10 per shard: halved every 200 lookups of a shard
    const SteadyTime t0{};
    for (int i = 0; i < 20; ++i) (void)store.get("k", t0);
    CHECK(store.frequency("k") == 15);
    for (int i = 0; i < 10'000; ++i) (void)store.get("other" + std::to_string(i), t0);
    CHECK(store.frequency("k") < 4);
    CHECK(LocalStore(160, 64 << 20).frequency("k") == 0);  // no admission: no counts
  }

  TEST_CASE("an entry's cost counts its key, its bytes and the bookkeeping") {
    const auto small = LocalStore::cost("k", Item{"v", 0});
    CHECK(small >= 100);  // a node, an item and its shared count, a bucket
    CHECK(LocalStore::cost(std::string(100, 'k'), Item{"v", 0}) >= small + 100);
    CHECK(LocalStore::cost("k", Item{std::string(1000, 'v'), 0}) >= small + 1000);
    LocalStore store(1000, 1 << 20);
    store.put_written("k", item(std::string(1000, 'v')), SteadyTime{} + 1h);
    CHECK(store.bytes() == LocalStore::cost("k", Item{std::string(1000, 'v'), 0}));
  }

  TEST_CASE("eviction order matches a model of least recently used, over random operations") {
    // One entry bound per shard is too coarse; four per shard, keys of one
    // shard only, so the model is one list.
    LocalStore store(16 * 4, std::size_t{1} << 30);
    const SteadyTime t0{};
    std::vector<std::string> keys;
    for (int i = 0; keys.size() < 12; ++i) {
      const std::string key = "m" + std::to_string(i);
      if (std::hash<std::string_view>{}(key) % 16 == 0) keys.push_back(key);
    }
    std::vector<std::string> model;  // most recent first
    std::uint64_t state = 12345;
    auto next = [&] {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      return static_cast<std::size_t>(state >> 33);
    };
    for (int step = 0; step < 5000; ++step) {
      const std::string& key = keys[next() % keys.size()];
      const auto at = std::find(model.begin(), model.end(), key);
      switch (next() % 3) {
        case 0: {  // put
          if (at != model.end()) model.erase(at);
          model.insert(model.begin(), key);
          if (model.size() > 4) model.pop_back();
          store.put_written(key, item(key), t0 + 1h);
          break;
        }
        case 1: {  // get
          const bool there = store.get(key, t0) != nullptr;
          REQUIRE(there == (at != model.end()));
          if (at != model.end()) std::rotate(model.begin(), at, at + 1);
          break;
        }
        default:  // erase
          if (at != model.end()) model.erase(at);
          store.erase(key);
      }
      REQUIRE(store.entries() == model.size());
    }
  }

  // --- the threads' fronts (borrow) ---

  TEST_CASE("a borrowed item follows every write, removal and clear of its key at once") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put_written("k", item("1"), t0 + 1h);
    for (int i = 0; i < 5; ++i) REQUIRE(store.borrow("k", t0) != nullptr);  // in the front now
    CHECK(store.borrow("k", t0)->data == "1");
    store.put_written("k", item("2"), t0 + 1h);
    REQUIRE(store.borrow("k", t0) != nullptr);
    CHECK(store.borrow("k", t0)->data == "2");
    store.update("k", item("3"), t0 + 1h);
    CHECK(store.borrow("k", t0)->data == "3");
    store.erase("k");
    CHECK(store.borrow("k", t0) == nullptr);
    store.put_written("k", item("4"), t0 + 1h);
    CHECK(store.borrow("k", t0)->data == "4");
    store.discard("k", store.borrow("k", t0));
    CHECK(store.borrow("k", t0) == nullptr);
    store.put_written("k", item("5"), t0 + 1h);
    CHECK(store.borrow("k", t0)->data == "5");
    store.clear();
    CHECK(store.borrow("k", t0) == nullptr);
    // Its time passes in the front as in the store.
    store.put_written("k", item("6"), t0 + 1s);
    CHECK(store.borrow("k", t0)->data == "6");
    CHECK(store.borrow("k", t0 + 1s) == nullptr);
  }

  TEST_CASE("an evicted item is not served from a front") {
    LocalStore store(16 * 2, std::size_t{1} << 30);  // two entries a shard
    const SteadyTime t0{};
    const auto same = keys_of_one_shard(3);
    store.put_written(same[0], item("0"), t0 + 1h);
    store.put_written(same[1], item("1"), t0 + 1h);
    for (int i = 0; i < 3; ++i) REQUIRE(store.borrow(same[1], t0) != nullptr);
    (void)store.borrow(same[0], t0);                 // same[0] the most recent in the shard
    store.put_written(same[2], item("2"), t0 + 1h);  // full: same[1] goes
    CHECK(store.borrow(same[1], t0) == nullptr);
    CHECK(store.entries() == 2);
  }

  TEST_CASE("a front does not serve one store's item for another's key") {
    const SteadyTime t0{};
    auto first = std::make_unique<LocalStore>(100, 1 << 20);
    first->put_written("k", item("first"), t0 + 1h);
    for (int i = 0; i < 3; ++i) REQUIRE(first->borrow("k", t0) != nullptr);
    first.reset();
    auto second = std::make_unique<LocalStore>(100, 1 << 20);  // perhaps at the same address
    CHECK(second->borrow("k", t0) == nullptr);
    LocalStore third(100, 1 << 20);
    third.put_written("k", item("third"), t0 + 1h);
    CHECK(third.borrow("k", t0)->data == "third");
    CHECK(second->borrow("k", t0) == nullptr);
  }

  TEST_CASE("lookups answered by a front are counted for admission and recency") {
    LocalStore store(160, 64 << 20, true);  // 10 entries a shard
    const SteadyTime t0{};
    store.put_written("hot", item("h"), t0 + 1h);
    for (int i = 0; i < 70; ++i) REQUIRE(store.borrow("hot", t0) != nullptr);
    CHECK(store.frequency("hot") == 15);  // counted when the front passed through
    // Keys of hot's shard written after it: hot, looked up through its front
    // all along, is relinked and outlives them.
    const auto shard = std::hash<std::string_view>{}("hot") % 16;
    int written = 0;
    for (int i = 0; written < 30; ++i) {
      const std::string key = "c" + std::to_string(i);
      if (std::hash<std::string_view>{}(key) % 16 != shard) continue;
      store.put_written(key, item("c"), t0 + 1h);
      ++written;
      for (int j = 0; j < 40; ++j) REQUIRE(store.borrow("hot", t0) != nullptr);
    }
    CHECK(store.get("hot", t0) != nullptr);
  }

  TEST_CASE("a large item is borrowed, not kept in the front") {
    LocalStore store(100, 1 << 24);
    const SteadyTime t0{};
    store.put_written("big", item(std::string(100'000, 'b')), t0 + 1h);
    const Item* first = store.borrow("big", t0);
    REQUIRE(first != nullptr);
    CHECK(first->data.size() == 100'000);
    store.erase("big");
    CHECK(store.borrow("big", t0) == nullptr);
  }

  TEST_CASE("within a borrow scope, what was borrowed stays valid whatever is borrowed after") {
    // A codec that itself looks keys up borrows again while the first
    // borrowed item is being decoded; the store may let that item go.
    LocalStore store(16, std::size_t{1} << 26);
    const SteadyTime t0{};
    store.put_written("big", item(std::string(5000, 'b')), t0 + 1h);
    store.put_written("small", item("s"), t0 + 1h);
    {
      const LocalStore::BorrowScope scope;
      const Item* big = store.borrow("big", t0);
      const Item* small = store.borrow("small", t0);
      REQUIRE(big != nullptr);
      REQUIRE(small != nullptr);
      for (int i = 0; i < 200; ++i) {
        const std::string key = "k" + std::to_string(i);
        store.put_written(key, item(std::string(i % 2 == 0 ? 3000 : 10, 'x')), t0 + 1h);
        (void)store.borrow(key, t0);
        (void)store.borrow(key, t0);
      }
      store.erase("big");
      store.erase("small");
      CHECK(big->data == std::string(5000, 'b'));
      CHECK(small->data == "s");
    }
  }
}
