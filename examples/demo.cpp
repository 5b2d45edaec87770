// The herd, with and without dogpile, across processes sharing memcached.
//
// Service workers (4 processes x 8 threads by default) serve requests for a
// few hot keys. Each value takes ~100 ms to build and is fresh for 250 ms,
// so values expire all the time under load. The same workload runs twice
// against the same memcached:
//
//   1. plain cache-aside: read; on a miss or an expired value, build it and
//      store it (every process and thread that sees it expired rebuilds it);
//   2. dogpile::CacheRegion::get_or_create: one caller in the whole fleet
//      rebuilds an expired value, the others keep serving the previous one.
//
// It prints progress while running, then creator calls against the number
// of values that expired (each replaced value counted once, however many
// creators replaced it), how callers were served, and their latency.
//
// scripts/demo.sh starts a memcached on a free loopback port and passes
// --memcached. Without it, everything runs in this one process on
// dogpile::MemoryBackend (threads only), and the demo says so.
//
//   dogpile_demo [--memcached OPTIONS] [--processes N] [--threads N] [--keys N]
//                [--seconds S] [--creator-ms MS] [--expire-ms MS]
#include <fmt/core.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/dogpile.hpp"

namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

struct Options {
  std::string memcached;  // libmemcached options; empty: in-process MemoryBackend
  int processes = 4;
  int threads = 8;
  int keys = 4;
  double seconds = 3.0;
  int creator_ms = 100;
  int expire_ms = 250;
  std::chrono::microseconds think{1000};  // a request's other work, between cache reads
};

constexpr int kMaxKeys = 64;
constexpr int kBuckets = 512;  // latency histogram: bucket i covers [1.04^i, 1.04^(i+1)) us
constexpr double kBucketGrowth = 1.04;  // so a percentile is known to within 4%

// Counters of one phase, in memory shared by every worker process.
struct Shared {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::atomic<long> calls{0};
  std::atomic<long> creations{0};
  std::atomic<long> expirations{0};  // values replaced, each counted once
  std::atomic<long> stale{0};
  std::atomic<long> waited{0};
  std::atomic<long> errors{0};
  std::atomic<int> most_creators{0};  // most creators running at once for one key
  std::atomic<int> creating[kMaxKeys] = {};
  std::atomic<std::int64_t> replaced[kMaxKeys] = {};  // newest generation replaced, + 1
  std::atomic<long> histogram[kBuckets] = {};
  std::atomic<std::int64_t> max_us{0};
};

// One Shared in anonymous shared memory, visible to processes forked later.
class SharedPhase {
 public:
  SharedPhase() {
    void* p =
        ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    shared_ = new (p) Shared();
  }
  ~SharedPhase() {
    shared_->~Shared();
    ::munmap(shared_, sizeof(Shared));
  }
  SharedPhase(const SharedPhase&) = delete;
  SharedPhase& operator=(const SharedPhase&) = delete;
  Shared& operator*() const { return *shared_; }

 private:
  Shared* shared_;
};

std::int64_t micros_since_epoch(dogpile::TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::string key_name(int k) { return "report:" + std::to_string(k); }

void record_latency(Shared& s, double us) {
  const int bucket = us < 1.0 ? 0 : static_cast<int>(std::log(us) / std::log(kBucketGrowth));
  s.histogram[std::clamp(bucket, 0, kBuckets - 1)].fetch_add(1, std::memory_order_relaxed);
  const auto whole = static_cast<std::int64_t>(us);
  auto seen = s.max_us.load(std::memory_order_relaxed);
  while (whole > seen && !s.max_us.compare_exchange_weak(seen, whole)) {
  }
}

// A creator is about to replace `generation` (its created_at in microseconds,
// 0 for "missing") of key k: count that generation once, however many
// creators replace it.
void note_replaced(Shared& s, int k, std::int64_t generation) {
  auto& last = s.replaced[k];
  std::int64_t seen = last.load();
  while (seen < generation + 1) {
    if (last.compare_exchange_weak(seen, generation + 1)) {
      s.expirations.fetch_add(1);
      return;
    }
  }
}

// The expensive creator: ~creator_ms of work, counted.
std::string build(Shared& s, const Options& o, int k) {
  const int running = s.creating[k].fetch_add(1) + 1;
  int most = s.most_creators.load();
  while (running > most && !s.most_creators.compare_exchange_weak(most, running)) {
  }
  const long n = s.creations.fetch_add(1) + 1;
  std::this_thread::sleep_for(std::chrono::milliseconds(o.creator_ms));
  s.creating[k].fetch_sub(1);
  return fmt::format("{} built #{}", key_name(k), n);
}

std::shared_ptr<dogpile::Backend> make_backend(const Options& o) {
  if (o.memcached.empty()) return std::make_shared<dogpile::MemoryBackend>();
  return std::make_shared<dogpile::MemcachedBackend>(o.memcached);
}

// Phase 1: cache-aside with no lock. Items are "created_at_us|value".
class PlainAccess {
 public:
  PlainAccess(std::shared_ptr<dogpile::Backend> backend, const Options& o, Shared& s)
      : backend_(std::move(backend)), o_(o), s_(s) {}

  std::string operator()(int k) {
    const std::string key = "plain:" + key_name(k);
    std::int64_t generation = 0;
    try {
      if (auto item = backend_->get(key)) {
        const auto bar = item->data.find('|');
        std::int64_t created = 0;
        std::from_chars(item->data.data(), item->data.data() + bar, created);
        const auto age =
            std::chrono::microseconds(micros_since_epoch(dogpile::system_clock().now()) - created);
        if (age <= std::chrono::milliseconds(o_.expire_ms)) return item->data.substr(bar + 1);
        generation = created;
      }
    } catch (const dogpile::BackendError&) {
      s_.errors.fetch_add(1);
    }
    note_replaced(s_, k, generation);
    std::string value = build(s_, o_, k);
    const auto now = micros_since_epoch(dogpile::system_clock().now());
    try {
      backend_->set(key, dogpile::Item{fmt::format("{}|{}", now, value), 0}, 0s);
    } catch (const dogpile::BackendError&) {
      s_.errors.fetch_add(1);
    }
    return value;
  }

 private:
  std::shared_ptr<dogpile::Backend> backend_;
  const Options& o_;
  Shared& s_;
};

// Phase 2: the same workload through a CacheRegion.
class RegionAccess {
 public:
  RegionAccess(std::shared_ptr<dogpile::Backend> backend, const Options& o, Shared& s)
      : region_(std::move(backend), region_options(o, s)), o_(o), s_(s) {}

  std::string operator()(int k) {
    const std::string key = key_name(k);
    dogpile::Outcome outcome{};
    std::string value = region_.get_or_create(
        key,
        [&] {
          const auto previous = region_.get_value_metadata<std::string>(key);
          note_replaced(s_, k, previous ? micros_since_epoch(previous->created_at) : 0);
          return build(s_, o_, k);
        },
        &outcome);
    if (outcome == dogpile::Outcome::stale) s_.stale.fetch_add(1);
    if (outcome == dogpile::Outcome::waited) s_.waited.fetch_add(1);
    return value;
  }

 private:
  static dogpile::RegionOptions region_options(const Options& o, Shared& s) {
    dogpile::RegionOptions r;
    r.expiration = std::chrono::milliseconds(o.expire_ms);
    r.key_prefix = "dogpile:";
    r.on_error = [&s](const dogpile::ErrorEvent&) { s.errors.fetch_add(1); };
    return r;
  }
  dogpile::CacheRegion region_;
  const Options& o_;
  Shared& s_;
};

// One worker process (or, in memory mode, the only one): `threads` service
// threads calling `access` until told to stop.
template <class Access>
void run_worker(const Options& o, Shared& s, std::shared_ptr<dogpile::Backend> backend, int threads,
                int seed) {
  Access access(std::move(backend), o, s);
  std::vector<std::jthread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::minstd_rand rng(static_cast<unsigned>(seed * 1000 + t) * 7919u + 1u);
      s.ready.fetch_add(1);
      while (!s.go.load()) std::this_thread::yield();
      while (!s.stop.load(std::memory_order_relaxed)) {
        const int k = static_cast<int>(rng() % static_cast<unsigned>(o.keys));
        const auto t0 = Steady::now();
        const std::string value = access(k);
        const auto t1 = Steady::now();
        if (value.empty()) std::abort();  // every caller gets a value
        s.calls.fetch_add(1, std::memory_order_relaxed);
        record_latency(s, std::chrono::duration<double, std::micro>(t1 - t0).count());
        std::this_thread::sleep_for(o.think);
      }
    });
  }
}

struct Summary {
  long calls, creations, expirations, stale, waited, errors;
  int most_creators;
  long delayed;  // calls that took at least half a creator's time
  double p50_us, p99_us, p999_us, max_us;
};

Summary summarize(const Shared& s, const Options& o) {
  long total = 0;
  for (const auto& b : s.histogram) total += b.load();
  auto percentile = [&](double p) {
    const long rank = static_cast<long>(std::ceil(p * static_cast<double>(total)));
    long seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
      seen += s.histogram[i].load();
      if (seen >= rank && seen > 0) {
        return std::sqrt(std::pow(kBucketGrowth, i) * std::pow(kBucketGrowth, i + 1));
      }
    }
    return 0.0;
  };
  long delayed = 0;
  const double half_build_us = o.creator_ms * 1000.0 / 2.0;
  for (int i = 0; i < kBuckets; ++i) {
    if (std::pow(kBucketGrowth, i) >= half_build_us) delayed += s.histogram[i].load();
  }
  return Summary{s.calls.load(),         s.creations.load(),
                 s.expirations.load(),   s.stale.load(),
                 s.waited.load(),        s.errors.load(),
                 s.most_creators.load(), delayed,
                 percentile(0.50),       percentile(0.99),
                 percentile(0.999),      static_cast<double>(s.max_us.load())};
}

template <class Access>
Summary run_phase(const char* title, const Options& o) {
  SharedPhase phase;
  Shared& s = *phase;
  fmt::print("{}\n", title);
  std::fflush(stdout);

  std::vector<pid_t> children;
  std::optional<std::jthread> in_process;
  const int total_threads = o.processes * o.threads;
  if (o.memcached.empty()) {
    in_process.emplace([&] { run_worker<Access>(o, s, make_backend(o), total_threads, 0); });
  } else {
    for (int p = 0; p < o.processes; ++p) {
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid < 0) {
        std::perror("fork");
        std::exit(2);
      }
      if (pid == 0) {
        int code = 0;
        try {
          run_worker<Access>(o, s, make_backend(o), o.threads, p + 1);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "worker: %s\n", e.what());
          code = 1;
        }
        std::fflush(nullptr);
        ::_exit(code);
      }
      children.push_back(pid);
    }
  }
  while (s.ready.load() < total_threads) std::this_thread::sleep_for(1ms);
  const auto start = Steady::now();
  s.go = true;
  const auto end = start + std::chrono::duration_cast<Steady::duration>(
                               std::chrono::duration<double>(o.seconds));
  for (auto next = start + 500ms; next < end; next += 500ms) {
    std::this_thread::sleep_until(next);
    fmt::print(
        "  {:4.1f}s  calls {:>8}  values expired {:>4}  creator calls {:>5}  served stale {:>7}\n",
        std::chrono::duration<double>(next - start).count(), s.calls.load(), s.expirations.load(),
        s.creations.load(), s.stale.load());
    std::fflush(stdout);
  }
  std::this_thread::sleep_until(end);
  s.stop = true;
  in_process.reset();
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fmt::print(stderr, "a worker process failed\n");
      std::exit(2);
    }
  }
  return summarize(s, o);
}

bool parse_int(std::string_view s, int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out > 0;
}

int usage(const char* argv0) {
  fmt::print(stderr,
             "usage: {} [--memcached OPTIONS] [--processes N] [--threads N] [--keys N] "
             "[--seconds S] [--creator-ms MS] [--expire-ms MS]\n",
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
    if (arg == "--memcached") {
      o.memcached = val;
    } else if (arg == "--processes") {
      ok = parse_int(val, o.processes);
    } else if (arg == "--threads") {
      ok = parse_int(val, o.threads);
    } else if (arg == "--keys") {
      ok = parse_int(val, o.keys) && o.keys <= kMaxKeys;
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

  if (o.memcached.empty()) {
    fmt::print(
        "No memcached given (scripts/demo.sh starts one when the memcached binary is "
        "installed):\nrunning in this one process on dogpile::MemoryBackend, {} threads.\n\n",
        o.processes * o.threads);
  } else {
    try {
      (void)make_backend(o);
    } catch (const std::exception& e) {
      fmt::print(stderr, "{}\n", e.what());
      return 2;
    }
    fmt::print("memcached: {}\n{} processes x {} threads, each process with its own connections.\n",
               o.memcached, o.processes, o.threads);
  }
  fmt::print(
      "dogpile {} demo: {} keys, each value takes {} ms to build and is fresh for {} ms.\n"
      "Each phase runs {:.1f} s; a request does ~1 ms of other work between cache reads.\n\n",
      dogpile::version_string, o.keys, o.creator_ms, o.expire_ms, o.seconds);

  const Summary plain = run_phase<PlainAccess>(
      "phase 1/2: plain cache-aside (read; on a miss or expiry, build and store)", o);
  fmt::print("\n");
  const Summary guarded =
      run_phase<RegionAccess>("phase 2/2: the same workload through dogpile::CacheRegion", o);

  auto row = [](const char* name, auto a, auto b) {
    fmt::print("  {:<42} {:>12} {:>12}\n", name, a, b);
  };
  auto us = [](double v) {
    return v < 1000.0 ? fmt::format("{:.0f} us", v) : fmt::format("{:.1f} ms", v / 1000.0);
  };
  fmt::print("\nresults (latency percentiles to within 4%)\n");
  row("", "plain cache", "dogpile");
  row("calls", plain.calls, guarded.calls);
  row("calls per second", static_cast<long>(plain.calls / o.seconds),
      static_cast<long>(guarded.calls / o.seconds));
  row("values expired or missing", plain.expirations, guarded.expirations);
  row("creator calls", plain.creations, guarded.creations);
  row("most creators at once for one key", plain.most_creators, guarded.most_creators);
  row("served stale while another rebuilt", plain.stale, guarded.stale);
  row("waited for another's value", "-", guarded.waited);
  row("calls delayed by a build (>= half of it)", plain.delayed, guarded.delayed);
  row("latency p50", us(plain.p50_us), us(guarded.p50_us));
  row("latency p99", us(plain.p99_us), us(guarded.p99_us));
  row("latency p99.9", us(plain.p999_us), us(guarded.p999_us));
  row("latency max", us(plain.max_us), us(guarded.max_us));
  if (plain.errors + guarded.errors > 0) row("backend errors", plain.errors, guarded.errors);

  const bool held = guarded.creations <= guarded.expirations && guarded.most_creators == 1;
  fmt::print(
      "\n{}: without dogpile, {} creator calls for {} expired values ({:.1f} per value); "
      "with it, {} for {}.\n",
      held ? "The herd was held back" : "The herd was NOT held back", plain.creations,
      plain.expirations,
      plain.expirations ? static_cast<double>(plain.creations) / plain.expirations : 0.0,
      guarded.creations, guarded.expirations);
  return held ? 0 : 1;
}
