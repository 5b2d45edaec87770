// SPDX-License-Identifier: MIT
// cached() and cached_multi(): wrapped functions, their keys, and their
// members, end to end on the in-process backend with a ManualClock.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <atomic>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends.hpp"
#include "dogpile/cached.hpp"
#include "dogpile/executor.hpp"
#include "manual_executor.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::RegionOptions;

namespace {

enum class Paint { red = 1, blue = 7 };

struct Point {
  int x, y;
};

struct NoFormatter {};

// test_cached's default: values fresh for a minute.
struct CachedFixture : dogpile::test::RegionFixture {
  RegionOptions options() { return RegionFixture::options(std::chrono::seconds(60)); }
};

}  // namespace

template <>
struct fmt::formatter<Point> : fmt::formatter<std::string_view> {
  auto format(const Point& p, fmt::format_context& ctx) const {
    return fmt::format_to(ctx.out(), "({},{})", p.x, p.y);
  }
};

// What can be part of a key is decided at compile time.
static_assert(dogpile::KeyArgument<int>);
static_assert(dogpile::KeyArgument<double>);
static_assert(dogpile::KeyArgument<Paint>);
static_assert(dogpile::KeyArgument<std::string>);
static_assert(dogpile::KeyArgument<const char*>);
static_assert(dogpile::KeyArgument<std::string_view>);
static_assert(dogpile::KeyArgument<Point>);  // has an fmt::formatter
static_assert(!dogpile::KeyArgument<NoFormatter>);

TEST_SUITE("cached") {
  TEST_CASE("a wrapped function is called once per key, its results come from the cache") {
    CachedFixture f;
    CacheRegion region(f.backend, f.options());
    int calls = 0;
    auto user_name = dogpile::cached(region, "user_name", [&](int id) {
      ++calls;
      return "user " + std::to_string(id);
    });
    CHECK(user_name(42) == "user 42");
    CHECK(user_name(42) == "user 42");
    CHECK(user_name(7) == "user 7");
    CHECK(calls == 2);
    CHECK(user_name.key(42) == "user_name|42");
    CHECK(region.get<std::string>("user_name|42") == "user 42");
  }

  TEST_CASE("keys: arguments are formatted with fmt and never run together") {
    CachedFixture f;
    CacheRegion region(f.backend, f.options());
    auto join = dogpile::cached(region, "join", [](std::string_view a, std::string_view b) {
      return std::string(a) + "+" + std::string(b);
    });
    CHECK(join.key("a|b", "c") == "join|a\\|b|c");
    CHECK(join.key("a", "b|c") == "join|a|b\\|c");
    CHECK(join("a|b", "c") == "a|b+c");
    CHECK(join("a", "b|c") == "a+b|c");  // a different key, so a different value
    CHECK(join.key("back\\slash", "") == "join|back\\\\slash|");

    auto mixed = dogpile::cached(region, "mixed", [](Paint c, double d, bool b, char ch, Point p) {
      return fmt::format("{} {} {} {} {},{}", static_cast<int>(c), d, b, ch, p.x, p.y);
    });
    CHECK(mixed.key(Paint::blue, 0.5, true, '|', Point{1, -2}) == "mixed|7|0.5|true|\\||(1,-2)");
    CHECK(mixed(Paint::red, 1.0, false, 'x', Point{0, 0}) == "1 1 false x 0,0");
  }

  TEST_CASE("get, set, invalidate, refresh and original") {
    CachedFixture f;
    CacheRegion region(f.backend, f.options());
    int calls = 0;
    auto square = dogpile::cached(region, "square", [&](int x) {
      ++calls;
      return x * x;
    });
    CHECK_FALSE(square.get(3).has_value());
    CHECK(square(3) == 9);
    CHECK(square.get(3) == 9);
    CHECK(square.set(100, 3));
    CHECK(square(3) == 100);  // what was set
    CHECK(square.invalidate(3));
    CHECK(square(3) == 9);
    CHECK(calls == 2);
    CHECK(square.refresh(3) == 9);  // calls the function even though the value is fresh
    CHECK(calls == 3);
    CHECK(square.original()(5) == 25);
    CHECK(calls == 4);
  }

  TEST_CASE("a fixed expiration, and one evaluated on every call") {
    CachedFixture f;
    CacheRegion region(f.backend, f.options());
    int calls = 0;
    auto counter = [&](int) { return ++calls; };
    auto short_lived = dogpile::cached(region, "short", counter).expiration(5s);
    short_lived(1);
    f.clock.advance(6s);
    CHECK(short_lived(1) == 2);  // expired after 5 s, not the region's 60 s

    int asked = 0;
    auto dynamic = dogpile::cached(region, "dynamic", counter).expiration([&] {
      ++asked;
      return dogpile::Expiration(asked < 3 ? 100s : 1s);
    });
    const int first = dynamic(1);
    f.clock.advance(2s);
    CHECK(dynamic(1) == first);  // asked 2nd time: 100 s
    CHECK(dynamic(1) != first);  // asked 3rd time: 1 s, and 2 s have passed
    CHECK(asked == 3);
  }

  TEST_CASE("should_cache: a refused result is returned, not stored") {
    CachedFixture f;
    CacheRegion region(f.backend, f.options());
    int calls = 0;
    auto lookup = dogpile::cached(region, "lookup", [&](int id) {
                    ++calls;
                    return id < 0 ? std::string() : std::to_string(id);
                  }).should_cache([](const std::string& v) { return !v.empty(); });
    CHECK(lookup(-1).empty());
    CHECK(lookup(-1).empty());
    CHECK(calls == 2);  // not cached
    CHECK(lookup(5) == "5");
    CHECK(lookup(5) == "5");
    CHECK(calls == 3);
  }

  TEST_CASE("background refresh copies the arguments: the caller's strings may be gone") {
    CachedFixture f;
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    auto o = f.options();
    o.background_refresh = true;
    o.executor = executor;
    CacheRegion region(f.backend, o);
    int calls = 0;
    auto greet = dogpile::cached(region, "greet", [&](std::string_view name) {
      ++calls;
      return "hello " + std::string(name) + " #" + std::to_string(calls);
    });
    {
      std::string name = "ada";
      CHECK(greet(std::string_view(name)) == "hello ada #1");
      f.clock.advance(61s);
      CHECK(greet(std::string_view(name)) == "hello ada #1");  // stale, at once
      name.assign("overwritten, then destroyed");
    }
    CHECK(executor->run_all() == 1);
    CHECK(greet("ada") == "hello ada #2");
  }

  TEST_CASE("cached_multi: one multi-get, and the function once with the missing ids") {
    CachedFixture f;
    CacheRegion region(f.backend, f.options());
    std::vector<std::vector<int>> asked;
    auto names = dogpile::cached_multi(region, "name", [&](std::span<const int> ids) {
      asked.emplace_back(ids.begin(), ids.end());
      std::vector<std::string> out;
      for (int id : ids) out.push_back("n" + std::to_string(id));
      return out;
    });
    CHECK(names(std::vector<int>{3, 1, 2}) == std::vector<std::string>{"n3", "n1", "n2"});
    REQUIRE(asked.size() == 1);
    CHECK(asked[0].size() == 3);
    const auto before = f.backend->counters();
    CHECK(names(std::vector<int>{2, 4, 1}) == std::vector<std::string>{"n2", "n4", "n1"});
    CHECK(asked.size() == 2);
    CHECK(asked[1] == std::vector<int>{4});
    CHECK(f.backend->counters().get_multis - before.get_multis == 2);  // read, re-read under lock
    CHECK(names.invalidate(std::vector<int>{1}));
    names(std::vector<int>{1, 2});
    CHECK(asked.back() == std::vector<int>{1});
    // The same keys as cached() with one argument.
    auto one =
        dogpile::cached(region, "name", [](int id) { return "other " + std::to_string(id); });
    CHECK(one(2) == "n2");
  }
}
