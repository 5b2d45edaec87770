// SPDX-License-Identifier: MIT
// NameRegistry: one object per key while in use, nothing kept afterwards.
#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/lock.hpp"
#include "dogpile/name_registry.hpp"

using namespace std::chrono_literals;
using dogpile::NameRegistry;

namespace {

struct Widget {
  Widget(std::string k, int a) : key(std::move(k)), arg(a) { live.fetch_add(1); }
  ~Widget() { live.fetch_sub(1); }
  Widget(const Widget&) = delete;
  std::string key;
  int arg;
  static inline std::atomic<int> live{0};
};

}  // namespace

TEST_SUITE_BEGIN("name-registry");

TEST_CASE("users of one key share an object built once with the key and arguments") {
  int built = 0;
  NameRegistry<Widget, int> registry([&](std::string_view key, int arg) {
    ++built;
    return Widget(std::string(key), arg);
  });
  auto a = registry.get("alpha", 1);
  auto b = registry.get("alpha", 2);  // arguments matter only on first use
  auto c = registry.get("beta", 3);
  CHECK(a.get() == b.get());
  CHECK(a.get() != c.get());
  CHECK(built == 2);
  CHECK(a->key == "alpha");
  CHECK(a->arg == 1);
  CHECK(c->arg == 3);
  CHECK(registry.size() == 2);
}

TEST_CASE("an object is dropped when its last user releases it") {
  const int live_before = Widget::live.load();
  int built = 0;
  NameRegistry<Widget, int> registry([&](std::string_view key, int arg) {
    ++built;
    return Widget(std::string(key), arg);
  });
  auto a = registry.get("k", 1);
  auto b = registry.get("k", 1);
  a.reset();
  CHECK(registry.size() == 1);
  b.reset();
  CHECK(registry.size() == 0);
  CHECK(Widget::live.load() == live_before);
  auto again = registry.get("k", 5);
  CHECK(built == 2);
  CHECK(again->arg == 5);
}

TEST_CASE("many distinct keys leave nothing behind") {
  NameRegistry<dogpile::Dogpile<>, dogpile::Duration> registry(
      [](std::string_view, dogpile::Duration expiration) {
        return dogpile::Dogpile<>(expiration);
      });
  for (int i = 0; i < 10000; ++i) {
    auto lock = registry.get("key:" + std::to_string(i), 1min);
    CHECK(lock->expiration() == dogpile::Expiration(1min));
  }
  CHECK(registry.size() == 0);
}

TEST_CASE("without a factory objects are built from the arguments") {
  NameRegistry<dogpile::Dogpile<>, dogpile::Duration> registry;
  auto lock = registry.get("k", 30s);
  CHECK(lock->expiration() == dogpile::Expiration(30s));
}

TEST_CASE("a throwing factory registers nothing") {
  bool fail = true;
  NameRegistry<Widget> registry([&](std::string_view key) {
    if (fail) throw std::runtime_error("no");
    return Widget(std::string(key), 0);
  });
  CHECK_THROWS_AS((void)registry.get("k"), std::runtime_error);
  CHECK(registry.size() == 0);
  fail = false;
  CHECK(registry.get("k")->key == "k");
}

TEST_CASE("an empty factory is a configuration error") {
  CHECK_THROWS_AS(NameRegistry<Widget>(nullptr), std::invalid_argument);
}

TEST_CASE("objects may outlive their registry") {
  std::shared_ptr<Widget> kept;
  {
    NameRegistry<Widget, int> registry(
        [](std::string_view key, int arg) { return Widget(std::string(key), arg); });
    kept = registry.get("k", 9);
  }
  CHECK(kept->arg == 9);
  kept.reset();  // the deleter still finds the registry's shared state
}

TEST_CASE("concurrent first users of a key all get the one object") {
  constexpr int kThreads = 16;
  std::atomic<int> built{0};
  NameRegistry<Widget> registry([&](std::string_view key) {
    built.fetch_add(1);
    return Widget(std::string(key), 0);
  });
  std::vector<const Widget*> seen(kThreads);
  std::latch start(kThreads);
  std::barrier all_holding(kThreads);
  {
    std::vector<std::jthread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        auto w = registry.get("shared");
        seen[i] = w.get();
        all_holding.arrive_and_wait();  // nobody releases before everyone holds it
      });
    }
  }
  CHECK(built == 1);
  for (const Widget* w : seen) CHECK(w == seen[0]);
  CHECK(registry.size() == 0);
}

TEST_CASE("under churn, users holding a key at the same time share one object") {
  // Every thread repeatedly takes a key, checks it against the object other
  // current holders of that key have recorded, and releases it.
  constexpr int kThreads = 12;
  constexpr int kKeys = 6;
  constexpr int kIterations = 4000;
  NameRegistry<Widget> registry([](std::string_view key) { return Widget(std::string(key), 0); });
  struct Holders {
    std::mutex m;
    int count = 0;
    const Widget* object = nullptr;
  };
  std::vector<Holders> holders(kKeys);
  std::atomic<int> mismatches{0};
  const int live_before = Widget::live.load();
  {
    std::latch start(kThreads);
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        for (int n = 0; n < kIterations; ++n) {
          const int k = (n * 7 + t) % kKeys;
          auto w = registry.get("key" + std::to_string(k));
          {
            std::lock_guard lock(holders[k].m);
            if (holders[k].count > 0 && holders[k].object != w.get()) mismatches.fetch_add(1);
            ++holders[k].count;
            holders[k].object = w.get();
          }
          std::this_thread::yield();
          {
            std::lock_guard lock(holders[k].m);
            --holders[k].count;
          }
        }
      });
    }
  }
  CHECK(mismatches == 0);
  CHECK(registry.size() == 0);
  CHECK(Widget::live.load() == live_before);
}

TEST_SUITE_END();
