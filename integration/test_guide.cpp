// SPDX-License-Identifier: MIT
// The README's guide, compiled and run against a real memcached. Every code
// block of the guide appears here verbatim (scripts/check_readme_snippets.py
// checks that); the names a snippet leaves to the reader are defined here.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "memcached_server.hpp"

using namespace std::chrono_literals;

namespace {

// What the guide's snippets use without defining it.
struct Resource {
  int version;
  int do_something() const { return version; }
};
std::atomic<int> resources_made{0};
std::shared_ptr<const Resource> create_some_resource() {
  return std::make_shared<const Resource>(Resource{++resources_made});
}

struct ExpensiveResource {
  std::atomic<int> calls{0};
  std::string create_value() { return "value #" + std::to_string(++calls); }
} my_expensive_resource;

struct SimpleCache {
  std::mutex mutex;
  std::map<std::string, std::string> items;
  void put(const std::string& key, const std::string& value) {
    std::lock_guard lock(mutex);
    items[key] = value;
  }
  std::optional<std::string> get(const std::string& key) {
    std::lock_guard lock(mutex);
    auto it = items.find(key);
    if (it == items.end()) return std::nullopt;
    return it->second;
  }
} my_cache;

struct SlowDatabase {
  std::atomic<int> lookups{0};
  std::string lookup(const std::string& what) {
    ++lookups;
    return "looked up " + what;
  }
  std::vector<std::string> load_names(std::span<const int> ids) {
    std::vector<std::string> names;
    for (int id : ids) names.push_back("name " + std::to_string(id));
    lookups += static_cast<int>(ids.size());
    return names;
  }
} slow_database;

std::atomic<int> fetches{0};
std::string fetch_url(const std::string& url) {
  ++fetches;
  return "contents of " + url;
}

std::string datafile = "version 1";
std::string create_expensive_datafile() { return "version 2"; }
void replace_old_datafile_with(const std::string& file) { datafile = file; }
int reads = 0;
void read_datafile() { reads += datafile.empty() ? 0 : 1; }

}  // namespace

TEST_SUITE("guide") {
  TEST_CASE("1. rudimentary usage") {
    std::shared_ptr<const Resource> the_resource;

    dogpile::Dogpile<> dogpile(std::chrono::hours(1));

    auto use_the_resource = [&] {
      dogpile.acquire([&] { the_resource = create_some_resource(); });
      return the_resource->do_something();
    };

    CHECK(use_the_resource() == 1);
    CHECK(use_the_resource() == 1);  // created once per hour
  }

  TEST_CASE("2. a value function over a cache") {
    dogpile::Dogpile<> dogpile(std::chrono::hours(1), {.init = true});

    auto get_value = [&] {
      return dogpile.acquire(
          [] {  // creates, stores and returns the value
            std::string value = my_expensive_resource.create_value();
            my_cache.put("some key", value);
            return value;
          },
          [] { return my_cache.get("some key"); });  // the stored value, or std::nullopt
    };

    CHECK(get_value() == "value #1");
    CHECK(get_value() == "value #1");
    CHECK(my_expensive_resource.calls == 1);
  }

  TEST_CASE("3. caching a function") {
    dogpile::test::MemcachedServer server;
    const std::string servers = server.options();

    // clang-format off
    auto backend = std::make_shared<dogpile::MemcachedBackend>(servers);  // "--SERVER=host:port ..."
    dogpile::CacheRegion region(backend, {.expiration = std::chrono::hours(1)});

    auto generate_my_expensive_value = dogpile::cached(region, "stuff", [] {
      return slow_database.lookup("stuff");
    });
    // clang-format on
    std::string stuff = generate_my_expensive_value();  // one memcached get once cached

    auto get_some_value = dogpile::cached(region, "datafile", [](const std::string& key) {
      return fetch_url("http://someslowsite.com/some_important_datafile_" + key + ".json");
    });
    std::string my_data = get_some_value("somekey");

    CHECK(stuff == "looked up stuff");
    CHECK(generate_my_expensive_value() == "looked up stuff");
    CHECK(slow_database.lookups == 1);
    CHECK(get_some_value("somekey") == my_data);
    CHECK(fetches == 1);
  }

  TEST_CASE("4. many keys") {
    dogpile::test::MemcachedServer server;
    auto backend = std::make_shared<dogpile::MemcachedBackend>(server.options());
    dogpile::CacheRegion region(backend, {.expiration = std::chrono::hours(1)});

    auto get_or_create = [&](const std::string& key, dogpile::Duration expiration_time,
                             const std::function<std::string()>& creation_function) {
      return region.get_or_create(key, creation_function,
                                  dogpile::CallOptions{.expiration = expiration_time});
    };

    auto get_some_value = [&](const std::string& key) {
      return get_or_create(key, std::chrono::hours(1), [&] {
        return fetch_url("http://someslowsite.com/some_important_datafile_" + key + ".json");
      });
    };

    std::vector<int> ids = {1, 2, 3};
    auto names = dogpile::cached_multi(region, "name", [](std::span<const int> ids) {
      return slow_database.load_names(ids);  // one query for all the ids not cached
    });
    std::vector<std::string> some_names = names(ids);

    const int before = fetches;
    CHECK(get_some_value("a") == get_some_value("a"));
    CHECK(fetches == before + 1);
    CHECK(some_names == std::vector<std::string>{"name 1", "name 2", "name 3"});
  }

  TEST_CASE("5. a distributed lock") {
    dogpile::test::MemcachedServer server;
    auto backend = std::make_shared<dogpile::MemcachedBackend>(server.options());

    using Lock = dogpile::Dogpile<dogpile::MemcachedLock>;
    dogpile::NameRegistry<Lock, dogpile::Duration> registry(
        [&](std::string_view key, dogpile::Duration expiration_time) {
          return Lock(expiration_time, {}, *backend, key);
        });

    auto lock = registry.get("some key", std::chrono::hours(1));
    lock->acquire([] { create_some_resource(); });

    using FileDogpile = dogpile::Dogpile<dogpile::FileLock>;
    FileDogpile on_this_host(std::chrono::hours(1), {}, "some key");

    const int before = resources_made;
    CHECK_FALSE(lock->acquire([] { create_some_resource(); }).created());
    CHECK(resources_made == before);
    CHECK(on_this_host.acquire([] { create_some_resource(); }).created());
  }

  TEST_CASE("6. locking the write phase against the readers") {
    dogpile::SyncReaderDogpile dogpile(std::chrono::hours(1));

    // clang-format off
    auto reading = dogpile.acquire([](dogpile::SyncReaderDogpile& self) {
      auto file = create_expensive_datafile();  // readers keep reading the old file
      auto writing = self.acquire_write_lock();  // waits for them; keeps new ones out
      replace_old_datafile_with(file);
    });
    read_datafile();  // under the reader lock until `reading` ends
    // clang-format on

    CHECK(datafile == "version 2");
    CHECK(reads == 1);
  }

  TEST_CASE("beyond the original: invalidation, background refresh, stale on error, XFetch") {
    dogpile::test::MemcachedServer server;
    auto backend = std::make_shared<dogpile::MemcachedBackend>(server.options());

    // clang-format off
    dogpile::CacheRegion region(backend, {
        .expiration = std::chrono::minutes(10),
        .key_prefix = "catalog:",
        .background_refresh = true,      // the stale winner returns at once, too
        .serve_stale_on_error = true,    // a failing creator does not lose a stale value
        .early_recompute_beta = 1.0,     // hot keys are refreshed before they expire
    });
    // clang-format on

    auto price = dogpile::cached(region, "price", [](int sku) { return sku * 100; });
    int p = price(7);

    region.invalidate(dogpile::Invalidation::soft);  // all processes within 1 s: stale
    region.invalidate(dogpile::Invalidation::hard);  // all processes within 1 s: gone

    CHECK(p == 700);
    CHECK(price(7) == 700);
  }

  TEST_CASE("beyond the original: a local tier for hot keys") {
    dogpile::test::MemcachedServer server;
    auto backend = std::make_shared<dogpile::MemcachedBackend>(server.options());

    // clang-format off
    dogpile::CacheRegion region(backend, {
        .expiration = std::chrono::minutes(10),
        .local = dogpile::LocalTier{.ttl = std::chrono::seconds(1)},  // others' writes: within 1 s
    });
    // clang-format on

    std::string name = region.get_or_create("user:42", [] { return std::string("Ada"); });
    name = region.get_or_create("user:42", [] { return std::string("Ada"); });  // no request
    region.set("user:42", std::string("Ada L."));  // this process sees it at once

    CHECK(name == "Ada");
    CHECK(region.stats().local_hits == 1);
    CHECK(region.get_or_create("user:42", [] { return std::string("?"); }) == "Ada L.");
    CHECK(region.stats().local_hits == 1);  // after set, read once from memcached
  }
}
