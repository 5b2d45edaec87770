// SPDX-License-Identifier: MIT
// The local store under threads (run under ThreadSanitizer): lookups through
// the threads' fronts while other threads write, erase and evict.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <thread>
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

}  // namespace

TEST_SUITE("local store threads") {
  TEST_CASE("a write from another thread ends the borrowing thread's copy before its next lookup") {
    LocalStore store(100, 1 << 20);
    const SteadyTime t0{};
    store.put_written("k", item("old"), t0 + 1h);
    std::promise<void> held;
    std::promise<void> written;
    std::string seen;
    std::thread reader([&] {
      for (int i = 0; i < 10; ++i) (void)store.borrow("k", t0);  // the front holds "old"
      held.set_value();
      written.get_future().wait();
      const Item* now = store.borrow("k", t0);
      seen = now != nullptr ? now->data : "(none)";
    });
    held.get_future().wait();
    store.put_written("k", item("new"), t0 + 1h);
    written.set_value();
    reader.join();
    CHECK(seen == "new");
  }

  TEST_CASE(
      "threads borrowing, writing, erasing and evicting at once: no key's item for another, "
      "no thread's own write lost to its front") {
    // Four entries a shard, twelve shared keys and one private key a thread:
    // shards fill and evict all the time, with admission counting.
    LocalStore store(16 * 4, std::size_t{1} << 30, true);
    const SteadyTime t0{};
    constexpr int kThreads = 4;
    constexpr int kShared = 12;
    std::atomic<int> wrong{0};
    std::atomic<int> lost{0};
    std::atomic<long> served{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::uint64_t state = 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(t + 1);
        auto next = [&] {
          state = state * 6364136223846793005ULL + 1442695040888963407ULL;
          return static_cast<int>(state >> 33);
        };
        const std::string mine = "private" + std::to_string(t);
        for (int i = 0; i < 20'000; ++i) {
          const std::string key = "shared" + std::to_string(next() % kShared);
          const int action = next() % 20;
          if (action < 12) {
            if (const Item* found = store.borrow(key, t0)) {
              served.fetch_add(1, std::memory_order_relaxed);
              if (found->data.rfind(key + ":", 0) != 0) wrong.fetch_add(1);
            }
          } else if (action < 14) {
            if (auto found = store.get(key, t0); found && found->data.rfind(key + ":", 0) != 0) {
              wrong.fetch_add(1);
            }
          } else if (action < 17) {
            store.put_written(key, item(key + ":" + std::to_string(i)), t0 + 1h);
          } else if (action < 18) {
            store.erase(key);
          } else {
            // Its own key: what it wrote last, or nothing (evicted), never older.
            const std::string value = mine + ":" + std::to_string(i);
            store.put_written(mine, item(value), t0 + 1h);
            for (int j = 0; j < 3; ++j) {
              const Item* found = store.borrow(mine, t0);
              if (found != nullptr && found->data != value) lost.fetch_add(1);
            }
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    CHECK(wrong.load() == 0);
    CHECK(lost.load() == 0);
    CHECK(served.load() > 1000);  // the fronts and the store did serve
    CHECK(store.entries() <= 16 * 4);
  }
}
