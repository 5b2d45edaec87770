// SPDX-License-Identifier: MIT
// Metrics: call latency by result, creator durations, backend requests by
// operation (lock and lease traffic included), the Observer, and the
// Prometheus text. Durations come from the injected clock: exact buckets.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "backends.hpp"
#include "dogpile/cached.hpp"
#include "dogpile/executor.hpp"
#include "dogpile/metrics.hpp"
#include "dogpile/region.hpp"
#include "manual_executor.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::BackendOp;
using dogpile::Outcome;
using dogpile::test::RegionFixture;

namespace {

// Counts what it sees, by operation and by call result.
struct Counting : dogpile::Observer {
  std::array<std::atomic<int>, dogpile::kBackendOps> requests{};
  std::array<std::atomic<int>, dogpile::kBackendOps> failed{};
  std::array<std::atomic<int>, dogpile::kOutcomes> calls{};
  std::atomic<int> failed_calls{0};
  std::atomic<int> creations{0};
  std::atomic<int> failed_creations{0};
  std::atomic<int> background_creations{0};
  std::mutex mutex;
  std::vector<std::string> keys;  // of the backend events
  void on_backend(const dogpile::BackendEvent& e) noexcept override {
    requests[static_cast<std::size_t>(e.op)]++;
    if (!e.ok) failed[static_cast<std::size_t>(e.op)]++;
    std::lock_guard lock(mutex);
    keys.emplace_back(e.key);
  }
  void on_call(const dogpile::CallEvent& e) noexcept override {
    if (e.outcome) {
      calls[static_cast<std::size_t>(*e.outcome)]++;
    } else {
      failed_calls++;
    }
  }
  void on_creation(const dogpile::CreationEvent& e) noexcept override {
    creations++;
    if (!e.ok) failed_creations++;
    if (e.background) background_creations++;
  }
};

std::uint64_t requests(const dogpile::RegionMetrics& m, BackendOp op) {
  return m.backend[static_cast<std::size_t>(op)].requests;
}

const dogpile::Histogram& calls(const dogpile::RegionMetrics& m, Outcome r) {
  return m.calls[static_cast<std::size_t>(r)];
}

// The bucket of a histogram that holds `seconds`.
std::size_t bucket_of(double seconds) {
  std::size_t i = 0;
  while (i < dogpile::Histogram::bounds.size() && seconds > dogpile::Histogram::bounds[i]) ++i;
  return i;
}

}  // namespace

TEST_SUITE("metrics") {
  TEST_CASE("calls by result, creator durations, on the region's clock") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, f.options(10s));
    auto slow = [&] {
      f.clock.advance(30ms);  // the creator takes 30 ms
      return std::string("v1");
    };
    CHECK(region.get_or_create("k", slow) == "v1");                 // created
    CHECK(region.get_or_create("k", f.creator("unused")) == "v1");  // fresh
    f.clock.advance(11s);
    CHECK(region.get_or_create("k", [&] {
      f.clock.advance(700ms);
      return std::string("v2");
    }) == "v2");  // expired: created again
    CHECK_THROWS(
        region.get_or_create("bad", []() -> std::string { throw std::runtime_error("x"); }));

    const auto m = region.metrics();
    const auto& created = calls(m, Outcome::created);
    CHECK(created.count == 2);
    CHECK(created.counts[bucket_of(0.030)] == 1);
    CHECK(created.counts[bucket_of(0.700)] == 1);
    CHECK(created.sum_seconds == doctest::Approx(0.730));
    CHECK(calls(m, Outcome::fresh).count == 1);
    CHECK(calls(m, Outcome::fresh).sum_seconds == 0);  // the clock did not move
    CHECK(m.failed_calls.count == 1);
    CHECK(calls(m, Outcome::stale).count == 0);
    CHECK(m.creations.count == 3);  // the one that threw too
    CHECK(m.creations.counts[bucket_of(0.030)] == 1);
    CHECK(m.creations.counts[bucket_of(0.700)] == 1);
    CHECK(created.quantile_bound(0.5) == 0.05);
    CHECK(created.quantile_bound(1.0) == 1.0);
  }

  TEST_CASE("a stale call and a multi call count by their result") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, f.options(10s));
    region.set("a", std::string("old"));
    f.clock.advance(11s);
    // Another caller holds the lock: this one is served the stale value.
    auto lock = f.backend->make_lock(region.backend_key("a"), 30s);
    REQUIRE(lock->try_lock());
    CHECK(region.get_or_create("a", f.creator("new")) == "old");
    lock->unlock();
    region.set("b", std::string("b"));
    std::vector<std::string> keys{"b", "c"};
    auto made = region.get_or_create_multi(keys, [](std::span<const std::string_view> missing) {
      return std::vector<std::string>(missing.size(), "made");
    });
    CHECK(made == std::vector<std::string>{"b", "made"});
    const auto m = region.metrics();
    CHECK(calls(m, Outcome::stale).count == 1);
    CHECK(calls(m, Outcome::created).count == 1);  // the multi call: its costliest key
    CHECK(calls(m, Outcome::fresh).count == 0);
  }

  TEST_CASE("backend requests by operation: the lease and its release are seen") {
    RegionFixture f;
    auto observer = std::make_shared<Counting>();
    auto options = f.options(10s);
    options.observer = observer;
    dogpile::CacheRegion region(f.backend, options);
    const auto before = f.backend->counters();
    CHECK(region.get_or_create("k", f.creator("v")) == "v");
    const auto cold = region.metrics();
    const auto wire = f.since(before);
    // A cold call: the read, the lock (an add), the confirming read, the
    // store, the lock's release.
    CHECK(requests(cold, BackendOp::get) == 1);
    CHECK(requests(cold, BackendOp::lease) == 1);
    CHECK(requests(cold, BackendOp::confirm) == 1);
    CHECK(requests(cold, BackendOp::store) == 1);
    CHECK(requests(cold, BackendOp::release) == 1);
    CHECK(wire.adds == 2);  // the lock's add and the value's (fenced on an empty key)
    CHECK(wire.lock_releases == 1);
    std::uint64_t total = 0;
    for (const auto& op : cold.backend) total += op.requests;
    CHECK(total == 5);
    // A fresh hit: one more get, nothing else.
    CHECK(region.get_or_create("k", f.creator("v")) == "v");
    const auto hot = region.metrics();
    CHECK(requests(hot, BackendOp::get) == 2);
    CHECK(requests(hot, BackendOp::lease) == 1);
    // The observer saw the same, with the user's key.
    CHECK(observer->requests[static_cast<std::size_t>(BackendOp::get)] == 2);
    CHECK(observer->requests[static_cast<std::size_t>(BackendOp::lease)] == 1);
    CHECK(observer->requests[static_cast<std::size_t>(BackendOp::release)] == 1);
    CHECK(observer->calls[static_cast<std::size_t>(Outcome::created)] == 1);
    CHECK(observer->calls[static_cast<std::size_t>(Outcome::fresh)] == 1);
    CHECK(observer->creations == 1);
    std::lock_guard lock(observer->mutex);
    for (const auto& key : observer->keys) CHECK(key == "k");
  }

  TEST_CASE("failed requests are counted as failures of their operation") {
    RegionFixture f;
    auto faulty = std::make_shared<dogpile::test::FaultyBackend>(f.backend);
    auto observer = std::make_shared<Counting>();
    auto options = f.options(10s);
    options.observer = observer;
    dogpile::CacheRegion region(faulty, options);
    faulty->fail_get = true;
    CHECK(region.get_or_create("k", f.creator("v")) == "v");  // degraded: made here
    const auto m = region.metrics();
    const auto& get = m.backend[static_cast<std::size_t>(BackendOp::get)];
    CHECK(get.requests >= 1);
    CHECK(get.failures == get.requests);
    CHECK(observer->failed[static_cast<std::size_t>(BackendOp::get)] ==
          static_cast<int>(get.failures));
    CHECK(m.backend[static_cast<std::size_t>(BackendOp::store)].failures == 0);
  }

  TEST_CASE("invalidation, mark_stale and writes are operations too") {
    RegionFixture f;
    auto options = f.options(10s);
    options.invalidation_check = 1s;
    dogpile::CacheRegion region(f.backend, options);
    region.set("k", std::string("v"));
    region.invalidate("k", dogpile::Invalidation::soft);
    region.invalidate(dogpile::Invalidation::hard);
    CHECK(region.get_or_create("k", f.creator("v2")) == "v2");
    const auto m = region.metrics();
    CHECK(requests(m, BackendOp::invalidation) >= 2);  // the record written, and read
    CHECK(requests(m, BackendOp::store) >= 2);         // the set, the value made
  }

  TEST_CASE("the Prometheus text: every family once, a series per region") {
    RegionFixture f;
    dogpile::CacheRegion users(f.backend, f.options(10s));
    auto other = f.options(10s);
    other.key_prefix = "o:";
    dogpile::CacheRegion orders(f.backend, other);
    CHECK(users.get_or_create("k", [&] {
      f.clock.advance(30ms);
      return std::string("v");
    }) == "v");
    CHECK(users.get_or_create("k", f.creator("v")) == "v");
    const std::string one = dogpile::prometheus_text(users, "users");
    CHECK(
        one.find("# TYPE dogpile_key_hits_total counter\ndogpile_key_hits_total{region=\"users\"} "
                 "1\n") != std::string::npos);
    CHECK(one.find("dogpile_key_created_total{region=\"users\"} 1\n") != std::string::npos);
    CHECK(one.find("dogpile_call_seconds_bucket{region=\"users\",result=\"created\",le=\"0.025\"} "
                   "0\n") != std::string::npos);
    CHECK(one.find("dogpile_call_seconds_bucket{region=\"users\",result=\"created\",le=\"0.05\"} "
                   "1\n") != std::string::npos);
    CHECK(one.find("dogpile_call_seconds_bucket{region=\"users\",result=\"created\",le=\"+Inf\"} "
                   "1\n") != std::string::npos);
    CHECK(one.find("dogpile_call_seconds_count{region=\"users\",result=\"fresh\"} 1\n") !=
          std::string::npos);
    CHECK(one.find("dogpile_creation_seconds_sum{region=\"users\"} 0.03\n") != std::string::npos);
    CHECK(one.find("dogpile_backend_requests_total{region=\"users\",op=\"lease\"} 1\n") !=
          std::string::npos);
    CHECK(one.find("dogpile_backend_requests_total{region=\"users\",op=\"get\"} 2\n") !=
          std::string::npos);
    // Every line is a comment or `name{labels} value`.
    std::size_t lines = 0;
    for (std::size_t at = 0; at < one.size();) {
      const auto end = one.find('\n', at);
      REQUIRE(end != std::string::npos);
      const std::string line = one.substr(at, end - at);
      CHECK((line.starts_with("# HELP dogpile_") || line.starts_with("# TYPE dogpile_") ||
             (line.starts_with("dogpile_") && line.find("} ") != std::string::npos)));
      at = end + 1;
      ++lines;
    }
    CHECK(lines > 100);

    const std::string two = dogpile::prometheus_text({{"users", &users}, {"or\"ders", &orders}});
    auto count = [&](std::string_view what) {
      std::size_t n = 0;
      for (auto at = two.find(what); at != std::string::npos; at = two.find(what, at + 1)) ++n;
      return n;
    };
    CHECK(count("# TYPE dogpile_key_hits_total counter\n") == 1);
    CHECK(count("dogpile_key_hits_total{region=\"users\"} 1\n") == 1);
    CHECK(count("dogpile_key_hits_total{region=\"or\\\"ders\"} 0\n") == 1);  // the quote escaped
  }

  TEST_CASE("keys and calls are counted apart, and the help lines say which is which") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, f.options(10s));
    const std::vector<std::string> keys{"a", "b", "c", "d", "e"};
    auto make = [](std::span<const std::string_view> ks) {
      return std::vector<std::string>(ks.begin(), ks.end());
    };
    (void)region.get_or_create_multi(keys, make);  // five keys made, one creator run
    (void)region.get_or_create_multi(keys, make);  // five fresh keys, one call
    const std::string text = dogpile::prometheus_text(region, "r");
    CHECK(text.find("dogpile_key_hits_total{region=\"r\"} 5\n") != std::string::npos);
    CHECK(text.find("dogpile_key_created_total{region=\"r\"} 5\n") != std::string::npos);
    CHECK(text.find("dogpile_call_seconds_count{region=\"r\",result=\"fresh\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("dogpile_call_seconds_count{region=\"r\",result=\"created\"} 1\n") !=
          std::string::npos);
    CHECK(text.find("dogpile_creation_seconds_count{region=\"r\"} 1\n") != std::string::npos);
    CHECK(text.find("# HELP dogpile_key_hits_total Keys found fresh in the backend (per key; "
                    "calls: dogpile_call_seconds_count).") != std::string::npos);
    CHECK(text.find("# HELP dogpile_call_seconds Latency of get_or_create calls, by how they "
                    "ended (per call") != std::string::npos);
  }

  TEST_CASE("a decode error carries the refusal's code, a codec's refusal \"codec\"") {
    RegionFixture f;
    std::vector<std::string> codes;
    auto options = f.options(10s);
    options.on_error = [&](const dogpile::ErrorEvent& e) {
      codes.emplace_back(e.code);
      CHECK(e.server.empty());  // no server to name: the in-process backend
    };
    dogpile::CacheRegion region(f.backend, options);
    region.set("b", std::string("bob's"));
    // b's item copied under a: another key's value.
    f.backend->set(region.backend_key("a"), *f.backend->get(region.backend_key("b")), 100s);
    CHECK_FALSE(region.get<std::string>("a").has_value());
    region.set("n", std::string("not a number"));
    CHECK_FALSE(region.get<std::int64_t>("n").has_value());
    CHECK(codes == std::vector<std::string>{"key_mismatch", "codec"});
  }

  TEST_CASE("creations are told apart: failed, and in the background") {
    RegionFixture f;
    auto observer = std::make_shared<Counting>();
    auto executor = std::make_shared<dogpile::test::ManualExecutor>();
    auto options = f.background(executor, 10s);
    options.observer = observer;
    dogpile::CacheRegion region(f.backend, options);
    CHECK_THROWS(
        region.get_or_create("k", []() -> std::string { throw std::runtime_error("db down"); }));
    CHECK(observer->failed_creations == 1);
    int loads = 0;
    auto cached = dogpile::cached(region, "user", [&](int) {
      ++loads;
      f.clock.advance(40ms);
      return std::string("v") + std::to_string(loads);
    });
    CHECK(cached(1) == "v1");  // cold: made by the caller
    f.clock.advance(11s);
    CHECK(cached(1) == "v1");  // stale: served, made again on the executor
    CHECK(executor->run_all() == 1);
    CHECK(cached(1) == "v2");
    CHECK(observer->creations == 3);
    CHECK(observer->background_creations == 1);
    const auto m = region.metrics();
    CHECK(m.creations.count == 3);
    CHECK(m.creations.counts[bucket_of(0.040)] == 2);
  }

  TEST_CASE("the Prometheus histograms are cumulative and end at their count") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, f.options(10s));
    for (int i = 0; i < 20; ++i) {
      CHECK(region.get_or_create("k" + std::to_string(i % 5), [&] {
        f.clock.advance(std::chrono::milliseconds(i * 37));
        return std::string("v");
      }) == "v");
    }
    const std::string text = dogpile::prometheus_text(region, "r");
    // Walk every series of buckets: le rises, counts never fall, +Inf ends
    // it and equals the series' _count.
    std::map<std::string, std::pair<double, std::uint64_t>> last;  // series -> (le, count)
    std::map<std::string, std::uint64_t> infinite;
    std::size_t buckets = 0;
    for (std::size_t at = 0; at < text.size();) {
      const auto end = text.find('\n', at);
      const std::string line = text.substr(at, end - at);
      at = end + 1;
      const auto le = line.find(",le=\"");
      if (line.starts_with("#") || le == std::string::npos) continue;
      ++buckets;
      const std::string series = line.substr(0, le);
      const auto close = line.find('"', le + 5);
      const std::string bound = line.substr(le + 5, close - le - 5);
      const std::uint64_t count = std::stoull(line.substr(line.rfind(' ') + 1));
      if (bound == "+Inf") {
        infinite[series] = count;
        CHECK(count >= last[series].second);
        continue;
      }
      const double b = std::stod(bound);
      auto& [previous_bound, previous_count] = last[series];
      CHECK(b > previous_bound);
      CHECK(count >= previous_count);
      previous_bound = b;
      previous_count = count;
    }
    CHECK(buckets == (dogpile::kOutcomes + 2 + dogpile::kBackendOps) *
                         (dogpile::Histogram::bounds.size() + 1));
    for (const auto& [series, count] : infinite) {
      // dogpile_call_seconds_bucket{region="r",result="created" -> ..._count{...}
      std::string name = series.substr(0, series.find("_bucket{"));
      const std::string labels = series.substr(series.find('{'));
      const std::string wanted = name + "_count" + labels + "} " + std::to_string(count) + "\n";
      CHECK_MESSAGE(text.find(wanted) != std::string::npos, wanted);
    }
    CHECK(infinite["dogpile_call_seconds_bucket{region=\"r\",result=\"created\""] == 5);
    CHECK(infinite["dogpile_call_seconds_bucket{region=\"r\",result=\"fresh\""] == 15);
  }
}
