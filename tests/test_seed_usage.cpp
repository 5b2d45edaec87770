// SPDX-License-Identifier: MIT
// Every scenario of the original usage guide, in C++. Section names follow the
// guide; the reader/writer section is in test_sync_reader.cpp.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/file_lock.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/name_registry.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::Dogpile;
using dogpile::ManualClock;
using dogpile::NeedRegeneration;
using dogpile::test::MemoryStore;
namespace fs = std::filesystem;

TEST_SUITE_BEGIN("seed-usage");

// "Rudimentary Usage"
TEST_CASE("rudimentary usage: a resource rebuilt once per expiry") {
  struct Resource {
    int version;
    int do_something() const { return version; }
  };
  ManualClock clock;
  std::mutex resource_mutex;  // readers may use the old resource while it is replaced
  std::shared_ptr<const Resource> the_resource;
  int version = 0;
  auto some_creation_function = [&] {
    auto fresh = std::make_shared<const Resource>(Resource{++version});
    std::lock_guard lock(resource_mutex);
    the_resource = std::move(fresh);
  };
  auto use_the_resource = [&] {
    std::lock_guard lock(resource_mutex);
    return the_resource->do_something();
  };

  Dogpile<> dogpile(3600s, {.clock = &clock});
  {
    auto acquired = dogpile.acquire(some_creation_function);  // the seed's `with` block
    CHECK(acquired.created());
    CHECK(use_the_resource() == 1);
  }
  dogpile.acquire(some_creation_function);
  CHECK(use_the_resource() == 1);
  clock.advance(3601s);
  dogpile.acquire(some_creation_function);
  CHECK(use_the_resource() == 2);
}

// "Using a Value Function with a Cache Backend"
TEST_CASE("value function with a cache backend") {
  ManualClock clock;
  MemoryStore my_cache;
  int expensive_calls = 0;

  auto get_value_from_cache = [&] {
    auto value = my_cache.get("some key");
    if (!value) throw NeedRegeneration();
    return value->value;
  };
  auto create_and_cache_value = [&] {
    std::string value = "expensive #" + std::to_string(++expensive_calls);
    my_cache.put("some key", value, clock.now());
    return value;
  };

  Dogpile<> dogpile(3600s, {.init = true, .clock = &clock});
  CHECK(dogpile.acquire(create_and_cache_value, get_value_from_cache) == "expensive #1");
  CHECK(dogpile.acquire(create_and_cache_value, get_value_from_cache) == "expensive #1");
  CHECK(expensive_calls == 1);
  clock.advance(3601s);
  CHECK(dogpile.acquire(create_and_cache_value, get_value_from_cache) == "expensive #2");
}

// "Using dogpile.core for Caching": the cached() decorator of the guide, one
// Dogpile per decorated function, values in a memcached-like store.
namespace {

template <class Fn>
auto seed_cached(MemoryStore& mc, std::string key, dogpile::Duration expiration,
                 const dogpile::Clock& clock, Fn fn) {
  auto dogpile = std::make_shared<Dogpile<>>(
      expiration, dogpile::DogpileOptions{.init = true, .clock = &clock});
  return [&mc, &clock, key = std::move(key), dogpile, fn = std::move(fn)] {
    auto get_value = [&] {
      auto value = mc.get(key);
      if (!value) throw NeedRegeneration();
      return value->value;
    };
    auto gen_cached = [&] {
      std::string value = fn();
      mc.put(key, value, clock.now());
      return value;
    };
    return dogpile->acquire(gen_cached, get_value);
  };
}

}  // namespace

TEST_CASE("the cached decorator: one cache get per access, none after creating") {
  ManualClock clock;
  MemoryStore mc;
  int lookups = 0;
  auto generate_my_expensive_value = seed_cached(
      mc, "some key", 3600s, clock, [&] { return "stuff #" + std::to_string(++lookups); });

  // First call: the get misses, the re-read under the lock misses, the
  // function runs, and its value is returned without another get.
  CHECK(generate_my_expensive_value() == "stuff #1");
  CHECK(mc.gets() == 2);
  for (int i = 0; i < 5; ++i) CHECK(generate_my_expensive_value() == "stuff #1");
  CHECK(mc.gets() == 2 + 5);  // exactly one get per fresh access
  CHECK(lookups == 1);

  // The store lost the value early (eviction): regenerated ahead of schedule.
  mc.erase("some key");
  CHECK(generate_my_expensive_value() == "stuff #2");
  CHECK(lookups == 2);

  clock.advance(3601s);
  CHECK(generate_my_expensive_value() == "stuff #3");
}

// "Scaling dogpile.core against Many Keys": a registry of Dogpiles, the
// creation time stored with the value.
namespace {

class ManyKeysCache {
 public:
  explicit ManyKeysCache(const dogpile::Clock& clock)
      : clock_(clock), registry_([&clock](std::string_view, dogpile::Duration expiration) {
          return Dogpile<>(expiration, {.clock = &clock});
        }) {}

  std::string get_or_create(const std::string& key, dogpile::Duration expiration,
                            const std::function<std::string()>& creation_function) {
    auto get_value = [&] { return store_.get(key); };  // std::optional<(value, created_at)>
    auto gen_cached = [&] {
      dogpile::ValueAndCreated<std::string> value_plus_time{creation_function(), clock_.now()};
      store_.put(key, value_plus_time.value, value_plus_time.created_at);
      return value_plus_time;
    };
    auto dogpile = registry_.get(key, expiration);
    return dogpile->acquire_with_created(gen_cached, get_value);
  }

  MemoryStore& store() { return store_; }
  std::size_t live_dogpiles() const { return registry_.size(); }

 private:
  const dogpile::Clock& clock_;
  MemoryStore store_;
  dogpile::NameRegistry<Dogpile<>, dogpile::Duration> registry_;
};

}  // namespace

TEST_CASE("many keys: a registry of dogpiles and creation times in the cache") {
  ManualClock clock;
  ManyKeysCache cache(clock);
  int fetches = 0;
  auto get_some_value = [&](const std::string& key) {
    return cache.get_or_create(key, 3600s, [&] {
      ++fetches;
      return "datafile " + key;
    });
  };

  CHECK(get_some_value("somekey") == "datafile somekey");
  CHECK(get_some_value("somekey") == "datafile somekey");
  CHECK(get_some_value("otherkey") == "datafile otherkey");
  CHECK(fetches == 2);
  CHECK(cache.live_dogpiles() == 0);  // no Dogpile kept once nobody uses it

  // The creation time lives in the cache: a value written long ago by another
  // process is judged by that time, though this process never saw it made.
  cache.store().put("ancient", "old data", clock.now() - 2h);
  CHECK(get_some_value("ancient") == "datafile ancient");
  CHECK(fetches == 3);
}

TEST_CASE("many keys: concurrent callers of one key share its dogpile") {
  ManualClock clock;
  ManyKeysCache cache(clock);
  std::atomic<int> fetches{0};
  std::atomic<int> arrived{0};
  constexpr int kThreads = 12;
  std::vector<std::string> results(kThreads);
  {
    std::latch start(kThreads);
    std::vector<std::jthread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        arrived.fetch_add(1);
        results[i] = cache.get_or_create("hot", 3600s, [&] {
          fetches.fetch_add(1);
          // Finish only once every caller is inside get_or_create.
          dogpile::test::eventually([&] { return arrived.load() == kThreads; });
          return std::string("hot value");
        });
      });
    }
  }
  CHECK(fetches == 1);
  for (const auto& r : results) CHECK(r == "hot value");
  CHECK(cache.live_dogpiles() == 0);
}

// "Using a File or Distributed Lock with Dogpile": the many-keys example with a
// FileLock per key, across real processes sharing a file-based cache.
namespace {

// A cache in a directory: one file per key holding "<created_at ticks> <value>",
// replaced atomically with rename(2).
struct FileCache {
  fs::path dir;

  std::optional<dogpile::ValueAndCreated<std::string>> get(const std::string& key) const {
    std::ifstream in(dir / ("value-" + key));
    long long ticks = 0;
    std::string value;
    if (!(in >> ticks >> value)) return std::nullopt;
    return dogpile::ValueAndCreated<std::string>{value,
                                                 dogpile::TimePoint(dogpile::Duration(ticks))};
  }
  void put(const std::string& key, const dogpile::ValueAndCreated<std::string>& v) const {
    const fs::path tmp = dir / ("tmp-" + std::to_string(::getpid()));
    std::ofstream(tmp) << v.created_at.time_since_epoch().count() << ' ' << v.value;
    fs::rename(tmp, dir / ("value-" + key));
  }
  void append(const std::string& file, const std::string& line) const {
    const int fd = ::open((dir / file).c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) return;
    const std::string text = line + "\n";
    (void)!::write(fd, text.data(), text.size());
    ::close(fd);
  }
  int lines(const std::string& file) const {
    std::ifstream in(dir / file);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  }
};

constexpr int kProcesses = 4;
constexpr int kThreadsPerProcess = 4;

// One process of the herd: kThreadsPerProcess threads ask for the same cold key.
int herd_process(const FileCache& cache, int gate) {
  char go = 0;
  if (::read(gate, &go, 1) != 1) return 20;
  const std::string me = std::to_string(::getpid());

  using Lock = Dogpile<dogpile::FileLock>;
  const fs::path lock_dir = cache.dir / "locks";
  dogpile::NameRegistry<Lock, dogpile::Duration> registry(
      [&](std::string_view key, dogpile::Duration expiration) {
        return Lock(expiration, {}, key, lock_dir);
      });

  auto get_value = [&] { return cache.get("report"); };
  auto gen_cached = [&] {
    // Hold the creation until every process has reached the lock, so the
    // others are truly waiting on it rather than arriving after the fact.
    dogpile::test::eventually([&] { return cache.lines("arrived") == kProcesses; });
    cache.append("creations", me);
    dogpile::ValueAndCreated<std::string> made{"made-by-" + me, dogpile::system_clock().now()};
    cache.put("report", made);
    return made;
  };

  std::vector<std::string> seen(kThreadsPerProcess);
  {
    std::latch start(kThreadsPerProcess);
    std::vector<std::jthread> threads;
    for (int i = 0; i < kThreadsPerProcess; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        if (i == 0) cache.append("arrived", me);
        auto dogpile = registry.get("report", 1h);
        seen[i] = dogpile->acquire_with_created(gen_cached, get_value);
      });
    }
  }
  for (const auto& s : seen) {
    if (s != seen[0]) return 21;
  }
  cache.append("seen", seen[0]);
  return 0;
}

}  // namespace

TEST_CASE("file lock: processes on one host create a cold value once") {
  dogpile::test::TempDir dir;
  const FileCache cache{dir.path()};
  int gate[2];
  REQUIRE(::pipe(gate) == 0);

  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(gate[1]);
      int code = 30;
      try {
        code = herd_process(cache, gate[0]);
      } catch (...) {
      }
      ::_exit(code);
    }
    children.push_back(pid);
  }
  ::close(gate[0]);
  for (int p = 0; p < kProcesses; ++p) REQUIRE(::write(gate[1], "g", 1) == 1);
  ::close(gate[1]);

  for (pid_t pid : children) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK(cache.lines("creations") == 1);
  std::ifstream seen(dir.path() / "seen");
  std::string first;
  REQUIRE(std::getline(seen, first));
  int agreeing = 1;
  for (std::string line; std::getline(seen, line);) agreeing += (line == first) ? 1 : 0;
  CHECK(agreeing == kProcesses);
  CHECK(first.rfind("made-by-", 0) == 0);
}

TEST_SUITE_END();
