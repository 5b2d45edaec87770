// SPDX-License-Identifier: MIT
// Multi-key calls of any size (SPEC I7): many keys through set_multi,
// get_multi, get_or_create_multi and remove_multi on one real memcached, on
// both transports (the build as shipped runs 250,000, the sanitizer builds,
// slower by far, 20,000: still dozens of chunks; DOGPILE_TEST_MULTI_KEYS=1000000
// runs a million). Pipelines are written in chunks while their replies are
// read, so the server never stalls on replies nobody reads, and a long batch
// that keeps making progress is no timeout and never marks the server down.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/metrics.hpp"
#include "dogpile/region.hpp"
#include "memcached_server.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::test::backend_for;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;

namespace {

std::string value_of(std::string_view key) {
  std::string v(100, '.');
  v.replace(0, key.size(), key);
  return v;
}

}  // namespace

TEST_SUITE("multi of any size") {
  TEST_CASE("any number of keys: set_multi, get_multi, get_or_create_multi, remove_multi") {
    const char* configured = std::getenv("DOGPILE_TEST_MULTI_KEYS");
#ifdef DOGPILE_MULTI_KEYS_DEFAULT
    constexpr std::size_t kDefault = DOGPILE_MULTI_KEYS_DEFAULT;  // the build as shipped
#else
    constexpr std::size_t kDefault = 20'000;  // the sanitized builds
#endif
    const std::size_t kKeys = configured != nullptr ? std::stoul(configured) : kDefault;
    MemcachedServer server({.memory_mb = 1024});
    dogpile::CacheRegion region(
        backend_for(server),
        dogpile::test::quiet(
            {.expiration = 1h, .clock_sync = std::nullopt, .invalidation_check = std::nullopt}));
    std::vector<std::string> keys;
    keys.reserve(kKeys);
    for (std::size_t i = 0; i < kKeys; ++i) keys.push_back("k" + std::to_string(i));
    const char* transport =
        dogpile::test::transport() == dogpile::test::Transport::meta ? "meta" : "classic";
    auto report = [&](const char* what, double started, long before) {
      std::printf("%s transport, %zu keys of 100 B: %-22s %7.0f ms, peak RSS +%ld MB\n", transport,
                  kKeys, what, now_ms() - started, (dogpile::test::peak_rss_kb() - before) / 1024);
    };

    // set_multi of the first half.
    std::vector<std::pair<std::string, std::string>> items;
    items.reserve(kKeys / 2);
    for (std::size_t i = 0; i < kKeys / 2; ++i) items.emplace_back(keys[i], value_of(keys[i]));
    dogpile::test::reset_peak_rss();
    long before = dogpile::test::peak_rss_kb();
    double started = now_ms();
    CHECK(region.set_multi(items));
    report("set_multi (half)", started, before);
    items = {};

    // get_multi of all: the first half found, the second missing.
    dogpile::test::reset_peak_rss();
    before = dogpile::test::peak_rss_kb();
    started = now_ms();
    const auto got = region.get_multi<std::string>(keys);
    report("get_multi", started, before);
    REQUIRE(got.size() == kKeys);
    std::size_t found = 0, wrong = 0;
    for (std::size_t i = 0; i < kKeys; ++i) {
      if (got[i]) {
        ++found;
        if (*got[i] != value_of(keys[i]) || i >= kKeys / 2) ++wrong;
      }
    }
    CHECK(found == kKeys / 2);
    CHECK(wrong == 0);

    // get_or_create_multi of all: the creator gets the second half, once.
    dogpile::test::reset_peak_rss();
    before = dogpile::test::peak_rss_kb();
    started = now_ms();
    std::size_t creator_calls = 0, created = 0;
    const auto values =
        region.get_or_create_multi(keys, [&](std::span<const std::string_view> missing) {
          ++creator_calls;
          created += missing.size();
          std::vector<std::string> out;
          out.reserve(missing.size());
          for (const auto k : missing) out.push_back(value_of(k));
          return out;
        });
    report("get_or_create_multi", started, before);
    // Where its time went: backend requests by operation.
    const auto metrics = region.metrics();
    for (std::size_t op = 0; op < dogpile::kBackendOps; ++op) {
      const auto& m = metrics.backend[op];
      if (m.requests == 0) continue;
      std::printf("  %-12s %7llu requests, %8.0f ms\n",
                  dogpile::to_string(static_cast<dogpile::BackendOp>(op)),
                  static_cast<unsigned long long>(m.requests), m.latency.sum_seconds * 1000);
    }
    REQUIRE(values.size() == kKeys);
    wrong = 0;
    for (std::size_t i = 0; i < kKeys; ++i) wrong += values[i] != value_of(keys[i]);
    CHECK(wrong == 0);
    CHECK(creator_calls == 1);
    CHECK(created == kKeys / 2);
    CHECK(region.stats().backend_errors == 0);
    CHECK(region.stats().degraded == 0);

    // Everything is stored now: a second get_or_create_multi creates nothing.
    started = now_ms();
    const auto again =
        region.get_or_create_multi(keys, [&](std::span<const std::string_view> missing) {
          ++creator_calls;
          return std::vector<std::string>(missing.size());
        });
    CHECK(creator_calls == 1);
    CHECK(again.size() == kKeys);

    dogpile::test::reset_peak_rss();
    before = dogpile::test::peak_rss_kb();
    started = now_ms();
    CHECK(region.remove_multi(keys));
    report("remove_multi", started, before);
    const auto after =
        region.get_multi<std::string>(std::vector<std::string>(keys.begin(), keys.begin() + 1000));
    std::size_t left = 0;
    for (const auto& v : after) left += v.has_value();
    CHECK(left == 0);
    CHECK(region.stats().backend_errors == 0);
  }
}
