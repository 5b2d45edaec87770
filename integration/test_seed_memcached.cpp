// SPDX-License-Identifier: MIT
// The memcached scenarios of the original usage guide, in C++, against a real
// memcached: the cached decorator, many keys with creation times stored in
// the cache, and a distributed lock shared by processes.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../tests/processes.hpp"
#include "dogpile/codec.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/name_registry.hpp"
#include "memcached_server.hpp"

using namespace std::chrono_literals;
using dogpile::Dogpile;
using dogpile::Item;
using dogpile::MemcachedBackend;
using dogpile::NeedRegeneration;
using dogpile::test::MemcachedServer;

namespace {

// "Using dogpile.core for Caching": a decorator caching one function's value
// in memcached under one key, with its own Dogpile.
template <class Fn>
std::function<std::string()> cached(std::shared_ptr<MemcachedBackend> mc, std::string key,
                                    dogpile::Duration expiration_time, Fn fn) {
  auto dogpile =
      std::make_shared<Dogpile<>>(expiration_time, dogpile::DogpileOptions{.init = true});
  return [=] {
    auto get_value = [&] {
      auto value = mc->get(key);
      if (!value) throw NeedRegeneration();
      return value->data;
    };
    auto gen_cached = [&] {
      std::string value = fn();
      mc->set(key, Item{value, 0}, 0s);
      return value;
    };
    return dogpile->acquire(gen_cached, get_value);
  };
}

// "Scaling dogpile.core against Many Keys": (value, created_at) stored together.
std::string pack(const std::string& value, dogpile::TimePoint created) {
  std::string out;
  dogpile::Codec<std::int64_t>::encode(created.time_since_epoch().count(), out);
  return out + value;
}
std::optional<dogpile::ValueAndCreated<std::string>> unpack(const std::optional<Item>& item) {
  if (!item || item->data.size() < 8) return std::nullopt;
  auto ticks = dogpile::Codec<std::int64_t>::decode(std::string_view(item->data).substr(0, 8));
  return dogpile::ValueAndCreated<std::string>{item->data.substr(8),
                                               dogpile::TimePoint(dogpile::Duration(*ticks))};
}

}  // namespace

TEST_SUITE("seed usage on memcached") {
  TEST_CASE("the cached decorator: one memcached get per access, none right after creating") {
    MemcachedServer server;
    auto mc = std::make_shared<MemcachedBackend>(server.options());
    std::atomic<int> lookups{0};
    auto generate_my_expensive_value = cached(mc, "some-key", 3600s, [&] {
      lookups.fetch_add(1);
      return std::string("stuff");
    });
    const auto before = server.stats().at("cmd_get");
    CHECK(generate_my_expensive_value() == "stuff");  // a miss, then the re-read under the lock
    CHECK(server.stats().at("cmd_get") - before == 2);
    {
      std::vector<std::jthread> threads;
      for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&] {
          for (int j = 0; j < 10; ++j) CHECK(generate_my_expensive_value() == "stuff");
        });
      }
    }
    CHECK(lookups.load() == 1);
    CHECK(server.stats().at("cmd_get") - before == 2 + 80);  // one get per access
    // memcached lost the value early: it is rebuilt ahead of schedule.
    CHECK(server.raw("delete some-key\r\n") == "DELETED\r\n");
    CHECK(generate_my_expensive_value() == "stuff");
    CHECK(lookups.load() == 2);
  }

  TEST_CASE("many keys: a registry of dogpiles, creation times stored with the values") {
    MemcachedServer server;
    auto mc = std::make_shared<MemcachedBackend>(server.options());
    dogpile::NameRegistry<Dogpile<>, dogpile::Duration> dogpile_registry(
        [](std::string_view, dogpile::Duration expiration_time) {
          return Dogpile<>(expiration_time);
        });
    std::atomic<int> creations{0};
    auto get_or_create = [&](const std::string& key, dogpile::Duration expiration_time,
                             const std::function<std::string()>& creation_function) {
      auto get_value = [&] { return unpack(mc->get(key)); };
      auto gen_cached = [&] {
        dogpile::ValueAndCreated<std::string> v{creation_function(), dogpile::system_clock().now()};
        mc->set(key, Item{pack(v.value, v.created_at), 0}, 0s);
        return v;
      };
      auto dogpile = dogpile_registry.get(key, expiration_time);
      return dogpile->acquire_with_created(gen_cached, get_value);
    };
    auto get_some_value = [&](const std::string& key) {
      return get_or_create(key, 3600s, [&] {
        creations.fetch_add(1);
        std::this_thread::sleep_for(20ms);
        return "datafile " + key;
      });
    };
    {
      std::vector<std::jthread> threads;
      for (int i = 0; i < 12; ++i) {
        threads.emplace_back([&, i] {
          const std::string key = "key" + std::to_string(i % 3);
          CHECK(get_some_value(key) == "datafile " + key);
        });
      }
    }
    CHECK(creations.load() == 3);
    CHECK(dogpile_registry.size() == 0);  // nothing held once the callers are done
    // Another process stored key0 two hours ago: expiry is judged by that time.
    mc->set("key0", Item{pack("old", dogpile::system_clock().now() - 7200s), 0}, 0s);
    CHECK(get_some_value("key0") == "datafile key0");
    CHECK(creations.load() == 4);
  }

  TEST_CASE("a distributed lock: processes on different hosts create a cold value once") {
    MemcachedServer server;
    struct State {
      std::atomic<int> ready{0};
      std::atomic<bool> go{false};
      std::atomic<int> creations{0};
      std::atomic<int> wrong{0};
    };
    dogpile::test::Shared<State> state;
    constexpr int kProcesses = 3, kThreads = 4;
    auto worker = [&] {
      auto mc = std::make_shared<MemcachedBackend>(server.options());
      using Lock = Dogpile<dogpile::MemcachedLock>;
      dogpile::NameRegistry<Lock, dogpile::Duration> registry(
          [&](std::string_view key, dogpile::Duration expiration_time) {
            return Lock(expiration_time, {}, *mc, key);
          });
      std::vector<std::jthread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
          state->ready.fetch_add(1);
          while (!state->go.load()) std::this_thread::yield();
          auto lock = registry.get("shared-key", 3600s);
          const auto v = lock->acquire_with_created(
              [&] {
                state->creations.fetch_add(1);
                std::this_thread::sleep_for(100ms);
                dogpile::ValueAndCreated<std::string> made{"made once",
                                                           dogpile::system_clock().now()};
                mc->set("shared-key", Item{pack(made.value, made.created_at), 0}, 0s);
                return made;
              },
              [&] { return unpack(mc->get("shared-key")); });
          if (v != "made once") state->wrong.fetch_add(1);
        });
      }
      return 0;
    };
    std::vector<pid_t> pids;
    for (int p = 0; p < kProcesses; ++p) pids.push_back(dogpile::test::fork_worker(worker));
    while (state->ready.load() < kProcesses * kThreads) std::this_thread::yield();
    state->go = true;
    for (pid_t pid : pids) CHECK(dogpile::test::wait_worker(pid) == 0);
    CHECK(state->creations.load() == 1);
    CHECK(state->wrong.load() == 0);
  }
}
