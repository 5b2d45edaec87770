// SPDX-License-Identifier: MIT
// The usage snippets at the top of each public header, compiled and run. The
// names a snippet leaves to the user (build_resource, cache, ...) are defined
// here; the snippet lines themselves are copied unchanged.
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dogpile/dogpile.hpp"
#include "support.hpp"

namespace {

struct Resource {
  int generation = 0;
};
int resource_builds = 0;
std::shared_ptr<Resource> build_resource() {
  return std::make_shared<Resource>(Resource{++resource_builds});
}
int uses = 0;
void use(const std::shared_ptr<Resource>& r) { uses += r ? 1 : 0; }

struct Cache {
  std::map<std::string, dogpile::ValueAndCreated<std::string>> items;
  dogpile::ValueAndCreated<std::string> put_with_created(const std::string& key,
                                                         std::string value) {
    dogpile::ValueAndCreated<std::string> entry{std::move(value), dogpile::system_clock().now()};
    items.insert_or_assign(key, entry);
    return entry;
  }
  std::optional<dogpile::ValueAndCreated<std::string>> get_with_created(const std::string& key) {
    auto it = items.find(key);
    if (it == items.end()) return std::nullopt;
    return it->second;
  }
};

int rebuilds = 0;
void rebuild() { ++rebuilds; }

std::string datafile = "v1";
int readers_done = 0;
std::string create_expensive_datafile() { return "v2"; }
void replace_old_datafile_with(const std::string& file) { datafile = file; }
void read_datafile() { readers_done += datafile.empty() ? 0 : 1; }

}  // namespace

TEST_SUITE_BEGIN("header-examples");

TEST_CASE("clock.hpp") {
  dogpile::ManualClock clock;
  dogpile::Dogpile<> lock(std::chrono::seconds(10), {.clock = &clock});
  lock.acquire([] {});
  CHECK_FALSE(lock.is_expired());
  clock.advance(std::chrono::seconds(11));  // the value is now expired
  CHECK(lock.is_expired());
}

TEST_CASE("dogpile.hpp") {
  dogpile::Dogpile<> lock(std::chrono::minutes(5));
  lock.acquire([&] { rebuild(); });
  lock.acquire([&] { rebuild(); });
  CHECK(rebuilds == 1);
}

TEST_CASE("lock.hpp") {
  std::shared_ptr<Resource> resource;
  Cache cache;
  const std::string key = "k";
  auto make = [] { return std::string("made"); };
  auto create_and_store = [&] { return cache.put_with_created("v", "stored").value; };
  auto read_from_cache = [&]() -> std::optional<std::string> {
    auto entry = cache.get_with_created("v");
    if (!entry) return std::nullopt;
    return entry->value;
  };

  // 1. Rudimentary: the Dogpile tracks the creation time itself.
  dogpile::Dogpile<> lock(std::chrono::hours(1));
  lock.acquire([&] { resource = build_resource(); });
  use(resource);
  CHECK(uses == 1);

  // 2. Value function: the value lives in a cache; `value_fn` returns it or
  //    throws dogpile::NeedRegeneration (or returns std::nullopt).
  dogpile::Dogpile<> cached_lock(std::chrono::hours(1), {.init = true});
  std::string v = cached_lock.acquire(create_and_store, read_from_cache);
  CHECK(v == "stored");

  // 3. Value and creation time both come from the cache (one Dogpile per key).
  dogpile::Dogpile<> per_key(std::chrono::hours(1));
  std::string w = per_key.acquire_with_created(
      [&] { return cache.put_with_created(key, make()); },  // ValueAndCreated<std::string>
      [&] { return cache.get_with_created(key); });         // std::optional of it
  CHECK(w == "made");
}

TEST_CASE("name_registry.hpp") {
  using Lock = dogpile::Dogpile<>;
  dogpile::NameRegistry<Lock, dogpile::Duration> registry(
      [](std::string_view, dogpile::Duration expiration) { return Lock(expiration); });
  std::shared_ptr<Lock> lock = registry.get("user:42", std::chrono::minutes(5));
  CHECK(lock->expiration() == dogpile::Expiration(std::chrono::minutes(5)));
}

TEST_CASE("file_lock.hpp") {
  // The snippet uses the default lock directory, which follows TMPDIR.
  dogpile::test::TempDir tmp;
  const char* old_tmpdir = std::getenv("TMPDIR");
  const std::string saved = old_tmpdir != nullptr ? old_tmpdir : "";
  ::setenv("TMPDIR", tmp.path().c_str(), 1);
  {
    dogpile::Dogpile<dogpile::FileLock> lock(std::chrono::minutes(5), {}, "report:2026");
    CHECK(lock.mutex().path().parent_path() == tmp.path() / "dogpile-locks");
    CHECK(lock.acquire([] {}).created());
  }
  if (old_tmpdir != nullptr) {
    ::setenv("TMPDIR", saved.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
}

TEST_CASE("sync_reader.hpp") {
  dogpile::SyncReaderDogpile lock(std::chrono::hours(1));
  auto reading = lock.acquire([](dogpile::SyncReaderDogpile& self) {
    auto file = create_expensive_datafile();
    auto writing = self.acquire_write_lock();
    replace_old_datafile_with(file);
  });
  read_datafile();
  CHECK(datafile == "v2");
  CHECK(readers_done == 1);
  CHECK(lock.readers() == 1);
}

TEST_SUITE_END();

// Snippets of the cache-region headers. region.hpp's needs a server and runs
// in integration/test_header_examples.cpp.
namespace {
struct Point {
  std::int32_t x, y;
};
}  // namespace

template <>
struct dogpile::Codec<Point> {
  static void encode(const Point& p, std::string& out) {
    dogpile::Codec<std::int32_t>::encode(p.x, out);
    dogpile::Codec<std::int32_t>::encode(p.y, out);
  }
  static std::optional<Point> decode(std::string_view bytes) {
    if (bytes.size() != 8) return std::nullopt;
    auto x = dogpile::Codec<std::int32_t>::decode(bytes.substr(0, 4));
    auto y = dogpile::Codec<std::int32_t>::decode(bytes.substr(4));
    return Point{*x, *y};
  }
};

TEST_SUITE_BEGIN("header-examples");

TEST_CASE("codec.hpp") {
  std::string bytes;
  dogpile::Codec<Point>::encode(Point{1, -2}, bytes);
  const auto p = dogpile::Codec<Point>::decode(bytes);
  REQUIRE(p.has_value());
  CHECK(p->x == 1);
  CHECK(p->y == -2);
  CHECK_FALSE(dogpile::Codec<Point>::decode("short").has_value());
}

TEST_CASE("backend.hpp") {
  auto backend = std::make_shared<dogpile::MemoryBackend>();
  backend->set("k", dogpile::Item{"bytes", 0}, std::chrono::seconds(60));
  std::optional<dogpile::Item> item = backend->get("k");
  CHECK(item == dogpile::Item{"bytes", 0});
}

TEST_CASE("memory.hpp") {
  dogpile::ManualClock clock;
  auto backend =
      std::make_shared<dogpile::MemoryBackend>(dogpile::MemoryBackend::Options{.clock = &clock});
  backend->set("k", dogpile::Item{"v", 0}, std::chrono::seconds(10));
  clock.advance(std::chrono::seconds(11));  // "k" is gone
  CHECK_FALSE(backend->get("k").has_value());
}

TEST_CASE("memcached.hpp (constructed only: the servers are not contacted)") {
  auto backend = std::make_shared<dogpile::MemcachedBackend>(
      "--SERVER=10.0.0.1:11211 --SERVER=10.0.0.2:11211 --POOL-MAX=32");
  dogpile::Dogpile<dogpile::MemcachedLock> lock(std::chrono::minutes(5), {}, *backend,
                                                "report:2026");
  CHECK(lock.mutex().lock_key() == "report:2026#L");
  CHECK(backend->options().ends_with("--POOL-MAX=32"));
}

TEST_SUITE_END();

namespace {
int name_loads = 0;
std::string load_user_name(int id) {
  ++name_loads;
  return "user " + std::to_string(id);
}
std::string fetch_quote() { return "42.0"; }
std::vector<std::string> load_user_names(std::span<const int> ids) {
  std::vector<std::string> names;
  for (int id : ids) names.push_back(load_user_name(id));
  return names;
}
}  // namespace

TEST_SUITE_BEGIN("header-examples");

TEST_CASE("cached.hpp") {
  dogpile::ManualClock clock;
  auto backend =
      std::make_shared<dogpile::MemoryBackend>(dogpile::MemoryBackend::Options{.clock = &clock});
  dogpile::CacheRegion region(backend, {.expiration = std::chrono::minutes(1), .clock = &clock});

  auto user_name = dogpile::cached(region, "user_name", [](int id) {
    return load_user_name(id);  // slow
  });
  std::string a = user_name(42);  // created, or from the cache
  user_name.invalidate(42);       // removed: the next call creates it

  auto short_lived = dogpile::cached(region, "quote", fetch_quote)
                         .expiration(std::chrono::seconds(5))
                         .should_cache([](const std::string& q) { return !q.empty(); });

  auto names = dogpile::cached_multi(region, "user_name", [](std::span<const int> ids) {
    return load_user_names(ids);  // std::vector<std::string>, in the order of ids
  });
  std::vector<std::string> some = names(std::vector<int>{1, 2, 3});

  CHECK(a == "user 42");
  CHECK(user_name(42) == "user 42");
  CHECK(name_loads == 2 + 3);
  CHECK(short_lived() == "42.0");
  CHECK(some == std::vector<std::string>{"user 1", "user 2", "user 3"});
}

TEST_CASE("executor.hpp") {
  auto backend = std::make_shared<dogpile::MemoryBackend>();

  auto pool = std::make_shared<dogpile::ThreadPoolExecutor>(4, 256);
  dogpile::CacheRegion region(
      backend,
      {.expiration = std::chrono::minutes(1), .background_refresh = true, .executor = pool});

  CHECK(region.options().executor == pool);
}

TEST_SUITE_END();
