// SPDX-License-Identifier: MIT
// No stale set (SPEC I2): a creation whose lock was granted before a remove,
// set or invalidation of its key never stores over it; its value still
// reaches its own caller. Two regions over one MemoryBackend are two
// processes: A's creator is held while B writes, then let go.
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/cached.hpp"
#include "dogpile/executor.hpp"
#include "manual_executor.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Invalidation;
using dogpile::test::eventually;
using dogpile::test::Gate;

namespace {

enum class Path { single, multi, background };
enum class Write { remove, set, invalidate_args, hard, soft };

const char* name(Path p) {
  switch (p) {
    case Path::single:
      return "get_or_create";
    case Path::multi:
      return "get_or_create_multi";
    case Path::background:
      return "background refresh";
  }
  return "";
}
const char* name(Write w) {
  switch (w) {
    case Write::remove:
      return "remove";
    case Write::set:
      return "set";
    case Write::invalidate_args:
      return "cached invalidate(args)";
    case Write::hard:
      return "invalidate(hard)";
    case Write::soft:
      return "invalidate(soft)";
  }
  return "";
}

struct Result {
  std::string a_got;                                       // what A's caller received for "user|1"
  std::uint64_t fenced_out = 0;                            // in A's region
  std::optional<dogpile::CachedValue<std::string>> after;  // what the cache holds for it
};

Result race(Path path, Write write) {
  dogpile::test::RegionFixture f;
  auto executor = std::make_shared<dogpile::test::ManualExecutor>();
  auto options_a = path == Path::background ? f.background(executor) : f.options();
  CacheRegion a(f.backend, options_a);
  CacheRegion b(f.backend, f.options());
  Gate gate;
  auto load = [&](int id) {
    if (id == 1) gate.pass();
    return "v" + std::to_string(id) + " read before the write";
  };
  auto cached_a = dogpile::cached(a, "user", load);
  auto cached_b = dogpile::cached(b, "user", [](int) { return std::string("unused"); });
  const std::string key = cached_a.key(1);

  if (path == Path::background) {
    REQUIRE(b.set(key, std::string("old")));
    f.clock.advance(11s);  // stale
  }
  Result r;
  std::jthread caller([&] {
    switch (path) {
      case Path::single:
      case Path::background:
        r.a_got = cached_a(1);
        break;
      case Path::multi: {
        const auto values = a.get_or_create_multi(std::vector<std::string>{key, cached_a.key(2)},
                                                  [&](std::span<const std::string_view> keys) {
                                                    std::vector<std::string> out;
                                                    for (auto k : keys)
                                                      out.push_back(load(k == key ? 1 : 2));
                                                    return out;
                                                  });
        r.a_got = values[0];
        break;
      }
    }
  });
  // B writes while A's creator is held; then the creator is let go.
  auto write_while_held = [&] {
    REQUIRE(eventually([&] { return gate.entered.load(); }));
    f.clock.advance(1ms);
    switch (write) {
      case Write::remove:
        b.remove(key);
        break;
      case Write::set:
        b.set(key, std::string("written by B"));
        break;
      case Write::invalidate_args:
        cached_b.invalidate(1);
        break;
      case Write::hard:
        b.invalidate(Invalidation::hard);
        a.invalidate(Invalidation::hard);  // seen by A at its next check; here, at once
        break;
      case Write::soft:
        b.invalidate(Invalidation::soft);
        a.invalidate(Invalidation::soft);
        break;
    }
    f.clock.advance(1ms);
    gate.open = true;
  };
  if (path == Path::background) {
    caller.join();
    CHECK(r.a_got == "old");  // the stale winner returned at once
    REQUIRE(executor->queued() == 1);
    std::jthread job([&] { executor->run_all(); });
    write_while_held();
    job.join();
    r.a_got = "made in the background";
  } else {
    write_while_held();
    caller.join();
  }
  r.fenced_out = a.stats().fenced_out;
  r.after = b.get_value_metadata<std::string>(key);
  return r;
}

}  // namespace

TEST_SUITE("fences") {
  TEST_CASE("a creation never stores over a remove, set or invalidation made while it ran") {
    for (Path path : {Path::single, Path::multi, Path::background}) {
      for (Write write :
           {Write::remove, Write::set, Write::invalidate_args, Write::hard, Write::soft}) {
        CAPTURE(name(path));
        CAPTURE(name(write));
        const Result r = race(path, write);
        if (path != Path::background) CHECK(r.a_got == "v1 read before the write");
        switch (write) {
          case Write::remove:
          case Write::invalidate_args:
            CHECK(r.fenced_out == 1);          // the creation's value was not stored...
            CHECK_FALSE(r.after.has_value());  // ...and the tombstone is a miss
            break;
          case Write::set:
            CHECK(r.fenced_out == 1);
            REQUIRE(r.after.has_value());
            CHECK(r.after->value == "written by B");
            CHECK(r.after->fresh);
            break;
          case Write::hard:
            // Stored, but it started before the invalidation: a miss.
            CHECK(r.fenced_out == 0);
            CHECK_FALSE(r.after.has_value());
            break;
          case Write::soft:
            CHECK(r.fenced_out == 0);
            REQUIRE(r.after.has_value());
            CHECK_FALSE(r.after->fresh);
            break;
        }
      }
    }
  }

  TEST_CASE("after a remove, the next caller creates the value anew and it is stored") {
    dogpile::test::RegionFixture f;
    CacheRegion region(f.backend, f.options());
    region.get_or_create("k", f.creator("v1"));
    CHECK(region.remove("k"));
    CHECK_FALSE(region.remove("k"));  // a tombstone is not a value
    CHECK_FALSE(region.get<std::string>("k").has_value());
    dogpile::Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("v2"), &outcome) == "v2");
    CHECK(outcome == dogpile::Outcome::created);
    CHECK(region.get<std::string>("k") == "v2");  // stored over the tombstone (by its version)
    CHECK(region.stats().fenced_out == 0);
    CHECK(region.stats().removals == 2);
  }

  TEST_CASE("a fenced-out value still reaches the callers of its flight, and is reported") {
    dogpile::test::RegionFixture f;
    CacheRegion a(f.backend, f.options());
    CacheRegion b(f.backend, f.options());
    Gate gate;
    std::atomic<int> got_mine{0};
    std::vector<std::jthread> callers;
    for (int i = 0; i < 4; ++i) {
      callers.emplace_back([&] {
        if (a.get_or_create("k", [&] {
              gate.pass();
              return std::string("mine");
            }) == "mine") {
          got_mine.fetch_add(1);
        }
      });
    }
    REQUIRE(eventually([&] { return gate.entered.load() && a.stats().lock_waits == 3; }));
    b.remove("k");
    gate.open = true;
    callers.clear();
    CHECK(got_mine.load() == 4);
    CHECK(a.stats().fenced_out == 1);
    CHECK(f.errors_of(dogpile::ErrorKind::fenced) == 1);
    CHECK_FALSE(b.get<std::string>("k").has_value());
  }
}
