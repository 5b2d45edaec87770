// The herd, with and without a dogpile lock.
//
// 32 service threads serve requests for a few hot keys. Each value takes
// ~100 ms to build and is fresh for 250 ms, so values expire all the time
// under load. The same workload runs twice against an in-process cache that
// stores (value, created_at) and keeps expired values:
//
//   1. a plain cache: read; on a miss or an expired value, build it and store it;
//   2. the same cache behind dogpile::Dogpile, one per key from a NameRegistry:
//      one caller rebuilds an expired value, the others keep serving it.
//
// It prints progress while running, then creator calls against the number of
// expirations, how callers were served, and their latency.
//
//   dogpile_demo [--threads N] [--keys N] [--seconds S] [--creator-ms MS] [--expire-ms MS]
#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dogpile/dogpile.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Entry = dogpile::ValueAndCreated<std::string>;

struct Options {
  int threads = 32;
  int keys = 4;
  double seconds = 3.0;
  int creator_ms = 100;
  int expire_ms = 250;
  std::chrono::microseconds think{1000};  // a request's other work, between cache reads
};

// The shared cache: (value, created_at) per key; expired values are kept.
class Store {
 public:
  std::optional<Entry> get(const std::string& key) const {
    std::shared_lock lock(mutex_);
    auto it = items_.find(key);
    if (it == items_.end()) return std::nullopt;
    return it->second;
  }
  void put(const std::string& key, Entry entry) {
    std::unique_lock lock(mutex_);
    items_.insert_or_assign(key, std::move(entry));
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, Entry> items_;
};

// Counters for one phase. Latencies are kept per thread and merged at the end.
struct Phase {
  explicit Phase(const Options& o) : key_gen(o.keys), creating(o.keys) {}
  std::atomic<long> calls{0};
  std::atomic<long> creations{0};
  std::atomic<long> expirations{0};  // values found expired or missing, each counted once
  std::atomic<long> stale{0};
  std::atomic<long> waited{0};
  std::atomic<int> most_creators{0};               // most creators running at once for one key
  std::vector<std::atomic<std::int64_t>> key_gen;  // last generation counted as expired
  std::vector<std::atomic<int>> creating;
  std::vector<std::vector<float>> latencies_us;
};

class Workload {
 public:
  Workload(const Options& o, Phase& phase) : o_(o), phase_(phase) {}

  static std::string key_name(int k) { return "report:" + std::to_string(k); }

  // Reads the cache and counts each expired (or missing) generation once.
  std::optional<Entry> read(int k) {
    auto entry = store_.get(key_name(k));
    const std::int64_t generation = entry ? entry->created_at.time_since_epoch().count() : 0;
    if (!entry || dogpile::system_clock().now() - entry->created_at > expiration()) {
      auto& last = phase_.key_gen[k];
      std::int64_t seen = last.load();
      while (seen < generation + 1) {
        if (last.compare_exchange_weak(seen, generation + 1)) {
          phase_.expirations.fetch_add(1);
          break;
        }
      }
    }
    return entry;
  }

  // The expensive creator: ~creator_ms of work, then the value is stored.
  Entry create(int k) {
    const int running = phase_.creating[k].fetch_add(1) + 1;
    int most = phase_.most_creators.load();
    while (running > most && !phase_.most_creators.compare_exchange_weak(most, running)) {
    }
    const long n = phase_.creations.fetch_add(1) + 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(o_.creator_ms));
    Entry made{fmt::format("{} built #{}", key_name(k), n), dogpile::system_clock().now()};
    store_.put(key_name(k), made);
    phase_.creating[k].fetch_sub(1);
    return made;
  }

  dogpile::Duration expiration() const { return std::chrono::milliseconds(o_.expire_ms); }

 private:
  const Options& o_;
  Phase& phase_;
  Store store_;
};

// Phase 1: cache-aside with no lock: everyone who sees a miss builds the value.
std::string plain_access(Workload& w, Phase&, int k) {
  auto entry = w.read(k);
  if (entry && dogpile::system_clock().now() - entry->created_at <= w.expiration()) {
    return std::move(entry->value);
  }
  return w.create(k).value;
}

// Phase 2: the same cache behind a dogpile lock per key.
class DogpileAccess {
 public:
  DogpileAccess()
      : registry_([](std::string_view, dogpile::Duration expiration) {
          return dogpile::Dogpile<>(expiration);
        }) {}

  std::string operator()(Workload& w, Phase& phase, int k) {
    auto lock = registry_.get(Workload::key_name(k), w.expiration());
    dogpile::Outcome outcome{};
    std::string value = lock->acquire_with_created([&] { return w.create(k); },
                                                   [&] { return w.read(k); }, &outcome);
    if (outcome == dogpile::Outcome::stale) phase.stale.fetch_add(1);
    if (outcome == dogpile::Outcome::waited) phase.waited.fetch_add(1);
    return value;
  }

 private:
  dogpile::NameRegistry<dogpile::Dogpile<>, dogpile::Duration> registry_;
};

struct Summary {
  long calls, creations, expirations, stale, waited;
  int most_creators;
  long delayed;  // calls that took at least half a creator's time
  double p50_us, p99_us, p999_us, max_us;
};

template <class Access>
Summary run_phase(const char* title, const Options& o, Access access_factory) {
  Phase phase(o);
  Workload workload(o, phase);
  auto access = access_factory(workload);
  phase.latencies_us.resize(o.threads);

  fmt::print("{}\n", title);
  std::fflush(stdout);
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < o.threads; ++t) {
      threads.emplace_back([&, t] {
        std::minstd_rand rng(static_cast<unsigned>(t) * 7919u + 1u);
        auto& lat = phase.latencies_us[t];
        while (Clock::now() < end) {
          const int k = static_cast<int>(rng() % static_cast<unsigned>(o.keys));
          const auto t0 = Clock::now();
          std::string value = access(workload, phase, k);
          const auto t1 = Clock::now();
          phase.calls.fetch_add(1, std::memory_order_relaxed);
          lat.push_back(std::chrono::duration<float, std::micro>(t1 - t0).count());
          if (value.empty()) std::abort();  // every caller gets a value
          std::this_thread::sleep_for(o.think);
        }
      });
    }
    // Progress while the service threads run.
    for (auto next = start + 500ms; next < end; next += 500ms) {
      std::this_thread::sleep_until(next);
      fmt::print(
          "  {:4.1f}s  calls {:>8}  expirations {:>4}  creator calls {:>5}  served stale {:>7}\n",
          std::chrono::duration<double>(next - start).count(), phase.calls.load(),
          phase.expirations.load(), phase.creations.load(), phase.stale.load());
      std::fflush(stdout);
    }
  }

  std::vector<float> all;
  for (auto& v : phase.latencies_us) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    if (all.empty()) return 0.0;
    const auto i = static_cast<std::size_t>(p * static_cast<double>(all.size() - 1));
    return static_cast<double>(all[i]);
  };
  const float slow_us = static_cast<float>(o.creator_ms) * 1000.0f / 2.0f;
  const long delayed = all.end() - std::lower_bound(all.begin(), all.end(), slow_us);
  return Summary{phase.calls.load(),
                 phase.creations.load(),
                 phase.expirations.load(),
                 phase.stale.load(),
                 phase.waited.load(),
                 phase.most_creators.load(),
                 delayed,
                 pct(0.50),
                 pct(0.99),
                 pct(0.999),
                 pct(1.0)};
}

bool parse_int(std::string_view s, int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out > 0;
}

int usage(const char* argv0) {
  fmt::print(
      stderr,
      "usage: {} [--threads N] [--keys N] [--seconds S] [--creator-ms MS] [--expire-ms MS]\n",
      argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const std::string_view val = argv[++i];
    bool ok = true;
    if (arg == "--threads") {
      ok = parse_int(val, o.threads);
    } else if (arg == "--keys") {
      ok = parse_int(val, o.keys);
    } else if (arg == "--creator-ms") {
      ok = parse_int(val, o.creator_ms);
    } else if (arg == "--expire-ms") {
      ok = parse_int(val, o.expire_ms);
    } else if (arg == "--seconds") {
      char* endp = nullptr;
      o.seconds = std::strtod(std::string(val).c_str(), &endp);
      ok = endp != nullptr && *endp == '\0' && o.seconds > 0;
    } else {
      ok = false;
    }
    if (!ok) return usage(argv[0]);
  }

  fmt::print(
      "dogpile {} demo: {} threads, {} keys, each value takes {} ms to build and is fresh for "
      "{} ms.\nEach phase runs {:.1f} s; a request does ~1 ms of other work between cache "
      "reads.\n\n",
      dogpile::version_string, o.threads, o.keys, o.creator_ms, o.expire_ms, o.seconds);

  const Summary plain =
      run_phase("phase 1/2: plain cache (read; on a miss or expiry, build and store)", o,
                [](Workload&) { return plain_access; });
  fmt::print("\n");
  const Summary guarded = run_phase("phase 2/2: the same cache behind dogpile::Dogpile", o,
                                    [](Workload&) { return DogpileAccess(); });

  auto row = [](const char* name, auto a, auto b) {
    fmt::print("  {:<40} {:>12} {:>12}\n", name, a, b);
  };
  auto us = [](double v) {
    return v < 1000.0 ? fmt::format("{:.1f} us", v) : fmt::format("{:.1f} ms", v / 1000.0);
  };
  fmt::print("\nresults\n");
  row("", "plain cache", "dogpile");
  row("calls", plain.calls, guarded.calls);
  row("calls per second", static_cast<long>(plain.calls / o.seconds),
      static_cast<long>(guarded.calls / o.seconds));
  row("values expired or missing", plain.expirations, guarded.expirations);
  row("creator calls", plain.creations, guarded.creations);
  row("most creators at once for one key", plain.most_creators, guarded.most_creators);
  row("served stale while another rebuilt", plain.stale, guarded.stale);
  row("waited for a first value", "-", guarded.waited);
  row("calls delayed by a build (>= half of it)", plain.delayed, guarded.delayed);
  row("latency p50", us(plain.p50_us), us(guarded.p50_us));
  row("latency p99", us(plain.p99_us), us(guarded.p99_us));
  row("latency p99.9", us(plain.p999_us), us(guarded.p999_us));
  row("latency max", us(plain.max_us), us(guarded.max_us));

  const bool held = guarded.creations <= guarded.expirations && guarded.most_creators == 1;
  fmt::print(
      "\n{}: without the lock, {} creator calls for {} expirations ({:.1f} per expiry); "
      "with it, {} for {}.\n",
      held ? "The herd was held back" : "The herd was NOT held back", plain.creations,
      plain.expirations,
      plain.expirations ? static_cast<double>(plain.creations) / plain.expirations : 0.0,
      guarded.creations, guarded.expirations);
  return held ? 0 : 1;
}
