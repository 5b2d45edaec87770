// SPDX-License-Identifier: MIT
// dogpile's benchmarks. Each subcommand measures one thing side by side with
// raw libmemcached (pooled, with the very option string MemcachedBackend
// uses) in the same run, and prints one line per figure: `name value unit`.
// --transport meta runs dogpile on MemcachedMetaBackend (figure names get
// "meta_" after their first word); the default is MemcachedBackend.
//
//   dogpile_bench hit        --server H:P --size BYTES [--ops N]   (both transports,
//                            raw libmemcached and a raw socket, call by call)
//   dogpile_bench throughput --server H:P --threads N [--milliseconds MS] [--keys N]
//   dogpile_bench herd       --server H:P --processes P --threads T --mode cold|stale
//                            [--creator-ms MS] [--csv PATH]
//   dogpile_bench multi      --server H:P [--keys N] [--rounds N]
//   dogpile_bench waiting    --server H:P [--creator-ms MS] [--warm-ms MS]
//   dogpile_bench wire       (requests and round trips per path, through a proxy)
//   dogpile_bench memory     [--keys N]
//   dogpile_bench compression --server H:P [--size BYTES] [--ops N]   (plain and zstd)
//
// Without --server, a memcached is started on a free loopback port for the run.
#include <fmt/core.h>
#include <fmt/format.h>
#include <libmemcached/memcached.h>
#include <libmemcachedutil-1.0/util.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <malloc.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <filesystem>

#include "dogpile/asio.hpp"
#include "dogpile/dogpile.hpp"
#include "engine/local_store.hpp"
#include "memcached_server.hpp"
#include "wire_paths.hpp"

namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

double now_us() {
  return std::chrono::duration<double, std::micro>(Steady::now().time_since_epoch()).count();
}

void figure(const std::string& name, double value, const char* unit) {
  fmt::print("{} {:.6g} {}\n", name, value, unit);
  std::fflush(stdout);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(rank, v.size() - 1)];
}

double median(std::vector<double> v) { return percentile(std::move(v), 50); }

// Command-line options: --name value.
class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 2; i + 1 < argc; i += 2) values_[argv[i]] = argv[i + 1];
  }
  std::string str(const std::string& name, std::string fallback = "") const {
    auto it = values_.find("--" + name);
    return it == values_.end() ? fallback : it->second;
  }
  long num(const std::string& name, long fallback) const {
    auto s = str(name);
    if (s.empty()) return fallback;
    long v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }

 private:
  std::map<std::string, std::string> values_;
};

bool meta_transport(const Args& args) { return args.str("transport", "classic") == "meta"; }

// A figure's name on the chosen transport: "hit_dogpile_100B" becomes
// "hit_meta_dogpile_100B" with --transport meta.
std::string named(const Args& args, const std::string& name) {
  if (!meta_transport(args)) return name;
  const auto underscore = name.find('_');
  return name.substr(0, underscore) + "_meta" + name.substr(underscore);
}

std::shared_ptr<dogpile::Backend> make_backend(const Args& args, const std::string& options) {
  if (meta_transport(args)) return std::make_shared<dogpile::MemcachedMetaBackend>(options);
  return std::make_shared<dogpile::MemcachedBackend>(options);
}

// The memcached to use: --server, or one started for this run.
class Server {
 public:
  explicit Server(const Args& args) {
    const std::string given = args.str("server");
    if (given.empty()) {
      own_ = std::make_unique<dogpile::test::MemcachedServer>();
      options_ = own_->options();
    } else {
      options_ = "--SERVER=" + given;
    }
  }
  const std::string& options() const { return options_; }
  int port() const { return std::stoi(options_.substr(options_.rfind(':') + 1)); }

 private:
  std::unique_ptr<dogpile::test::MemcachedServer> own_;
  std::string options_;
};

// Raw libmemcached: a pool made from the same option string MemcachedBackend
// uses; a get copies the value into a std::string, as a C++ caller would.
class RawClient {
 public:
  explicit RawClient(const std::string& options)
      : pool_(memcached_pool(options.data(), options.size())) {
    if (pool_ == nullptr) throw std::runtime_error("memcached_pool failed");
  }
  ~RawClient() { memcached_pool_destroy(pool_); }
  std::optional<std::string> get(const std::string& key) {
    memcached_return_t rc;
    timespec wait{1, 0};
    memcached_st* mc = memcached_pool_fetch(pool_, &wait, &rc);
    if (mc == nullptr) throw std::runtime_error("pool fetch failed");
    size_t length = 0;
    uint32_t flags = 0;
    char* value = memcached_get(mc, key.data(), key.size(), &length, &flags, &rc);
    std::optional<std::string> out;
    if (value != nullptr) out.emplace(value, length);
    std::free(value);
    memcached_pool_release(pool_, mc);
    return out;
  }
  void set(const std::string& key, const std::string& value) {
    memcached_return_t rc;
    timespec wait{1, 0};
    memcached_st* mc = memcached_pool_fetch(pool_, &wait, &rc);
    if (mc == nullptr) throw std::runtime_error("pool fetch failed");
    memcached_set(mc, key.data(), key.size(), value.data(), value.size(), 0, 0);
    memcached_pool_release(pool_, mc);
  }

 private:
  memcached_pool_st* pool_;
};

dogpile::RegionOptions quiet_options() {
  dogpile::RegionOptions o;
  o.expiration = std::chrono::hours(1);
  o.on_error = [](const dogpile::ErrorEvent& e) {
    fmt::print(stderr, "dogpile error: {} {}\n", e.operation, e.message);
  };
  return o;
}

// --- hit ---------------------------------------------------------------------
// A fresh hit on one key, four ways, one call of each in turn (the order
// rotating), all on this one thread: get_or_create on each transport, raw
// libmemcached's memcached_get, and a raw socket's `mg <key> v` (the round
// trip itself: the physical limit). Medians of the per-call times.
// Interleaving call by call puts every path under the same conditions; run
// against a memcached with one worker thread (-t 1), every connection is
// served by the same thread (with more, memcached assigns each connection
// to one of its threads, and connections on a busier thread are slower).
class RawSocket {
 public:
  explicit RawSocket(int port) : fd_(dogpile::test::connect_loopback(port)) {
    if (fd_ < 0) throw std::runtime_error("cannot connect");
  }
  ~RawSocket() { ::close(fd_); }
  // `mg key v`; the value's size.
  std::size_t get(const std::string& request) {
    if (::send(fd_, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      throw std::runtime_error("send failed");
    }
    buffer_.clear();
    std::size_t need = std::string::npos;
    for (;;) {
      char chunk[16384];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) throw std::runtime_error("recv failed");
      buffer_.append(chunk, static_cast<std::size_t>(n));
      if (need == std::string::npos) {
        const auto eol = buffer_.find("\r\n");
        if (eol == std::string::npos) continue;
        if (buffer_.compare(0, 3, "VA ") != 0) throw std::runtime_error("not a hit");
        std::size_t length = 0;
        std::from_chars(buffer_.data() + 3, buffer_.data() + eol, length);
        need = eol + 2 + length + 2;
      }
      if (buffer_.size() >= need) return need;
    }
  }

 private:
  int fd_;
  std::string buffer_;
};

int bench_hit(const Args& args) {
  Server server(args);
  const auto size = static_cast<std::size_t>(args.num("size", 100));
  const long ops = args.num("ops", 10000);
  auto classic = std::make_shared<dogpile::MemcachedBackend>(server.options());
  auto meta = std::make_shared<dogpile::MemcachedMetaBackend>(server.options());
  dogpile::CacheRegion region(classic, quiet_options());
  dogpile::CacheRegion meta_region(meta, quiet_options());
  auto with_local = quiet_options();
  with_local.local = dogpile::LocalTier{};  // 1 s: a hot key is read again once a second
  dogpile::CacheRegion local_region(classic, with_local);
  RawClient raw(classic->options());
  RawSocket socket(server.port());
  const std::string value(size, 'v');
  const std::string raw_key = "raw:hit:" + std::to_string(size);
  raw.set(raw_key, value);
  const std::string key = "hit:" + std::to_string(size);
  region.set(key, value);
  const std::string socket_request = "mg " + raw_key + " v\r\n";
  auto creator = [&] { return value; };
  enum Path { kClassic, kMeta, kRaw, kSocket, kLocal, kPaths };
  std::vector<double> times[kPaths];
  auto call = [&](int path) {
    const double t0 = now_us();
    bool ok = false;
    switch (path) {
      case kClassic:
        ok = region.get_or_create(key, creator).size() == size;
        break;
      case kMeta:
        ok = meta_region.get_or_create(key, creator).size() == size;
        break;
      case kRaw:
        ok = raw.get(raw_key)->size() == size;
        break;
      case kLocal:
        ok = local_region.get_or_create(key, creator).size() == size;
        break;
      default:
        ok = socket.get(socket_request) > size;
        break;
    }
    const double took = now_us() - t0;
    if (!ok) throw std::runtime_error("a hit returned the wrong value");
    return took;
  };
  for (int i = 0; i < 1000; ++i) {  // warm up every path
    for (int p = 0; p < kPaths; ++p) call(p);
  }
  for (long i = 0; i < ops; ++i) {
    for (int j = 0; j < kPaths; ++j) {
      const int p = static_cast<int>((i + j) % kPaths);
      times[p].push_back(call(p));
    }
  }
  const std::string label =
      size >= 1024 ? fmt::format("{}KB", size / 1024) : fmt::format("{}B", size);
  const double raw_us = median(times[kRaw]);
  figure("hit_raw_" + label, raw_us, "us");
  figure("hit_socket_" + label, median(times[kSocket]), "us");
  figure("hit_dogpile_" + label, median(times[kClassic]), "us");
  figure("hit_meta_dogpile_" + label, median(times[kMeta]), "us");
  figure("hit_ratio_" + label, median(times[kClassic]) / raw_us, "x");
  figure("hit_meta_ratio_" + label, median(times[kMeta]) / raw_us, "x");
  figure("hit_socket_ratio_" + label, median(times[kSocket]) / raw_us, "x");
  figure("hit_local_" + label, median(times[kLocal]), "us");
  figure("hit_local_speedup_" + label, raw_us / median(times[kLocal]), "x");
  fmt::print("# hit_local_{} {} of {} calls served by the local tier, with no request\n", label,
             local_region.stats().local_hits, ops + 1000);
  if (region.stats().hits < static_cast<std::uint64_t>(ops) ||
      meta_region.stats().hits < static_cast<std::uint64_t>(ops)) {
    return 1;
  }
  return 0;
}

// --- throughput ----------------------------------------------------------------
int bench_throughput(const Args& args) {
  Server server(args);
  const int threads = static_cast<int>(args.num("threads", 1));
  const double seconds = static_cast<double>(args.num("milliseconds", 2000)) / 1000.0;
  const int keys = static_cast<int>(args.num("keys", 1000));
  dogpile::CacheRegion region(make_backend(args, server.options()), quiet_options());
  RawClient raw(dogpile::MemcachedBackend(server.options()).options());
  const std::string value(100, 'v');
  for (int k = 0; k < keys; ++k) {
    region.set("tp:" + std::to_string(k), value);
    raw.set("raw:tp:" + std::to_string(k), value);
  }
  auto run = [&](bool dogpile_path, double duration) {
    std::atomic<bool> stop{false};
    std::atomic<long> total{0};
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        unsigned k = static_cast<unsigned>(t) * 7919u;
        long done = 0;
        auto creator = [&] { return value; };
        while (!stop.load(std::memory_order_relaxed)) {
          k = (k * 1103515245u + 12345u);
          const std::string id = std::to_string(k % static_cast<unsigned>(keys));
          if (dogpile_path) {
            region.get_or_create("tp:" + id, creator);
          } else {
            raw.get("raw:tp:" + id);
          }
          ++done;
        }
        total += done;
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(duration));
    stop = true;
    pool.clear();
    return static_cast<double>(total.load()) / duration;
  };
  run(true, 0.2);  // warm up connections
  run(false, 0.2);
  // Many short alternating slices, so that drifts in the machine's load hit
  // both alike; the ratio is the median of the slices' ratios.
  constexpr int kRounds = 20;
  std::vector<double> ours_rates, raw_rates, ratios;
  for (int round = 0; round < kRounds; ++round) {
    const double slice = seconds / kRounds;
    const bool ours_first = round % 2 == 0;
    const double first = run(ours_first, slice);
    const double second = run(!ours_first, slice);
    const double o = ours_first ? first : second;
    const double r = ours_first ? second : first;
    ours_rates.push_back(o);
    raw_rates.push_back(r);
    ratios.push_back(o / r);
  }
  const double ours = median(ours_rates);
  const double theirs = median(raw_rates);
  figure(named(args, fmt::format("throughput_raw_{}t", threads)), theirs, "ops/s");
  figure(named(args, fmt::format("throughput_dogpile_{}t", threads)), ours, "ops/s");
  figure(named(args, fmt::format("throughput_ratio_{}t", threads)), median(ratios), "x");
  return 0;
}

// --- herd ------------------------------------------------------------------------
// P processes x T threads, released together on one key: cold (no value) or
// stale (an expired value). Latencies go to shared memory, then a CSV.
struct HerdShared {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> creator_calls{0};
  std::atomic<int> wrong{0};
  double latency_us[8 * 64];
  bool was_creator[8 * 64];
};

template <class Body>
std::vector<double> run_herd(const Args& args, HerdShared& shared, int processes, int threads,
                             const std::string& servers, Body body) {
  std::vector<pid_t> pids;
  for (int p = 0; p < processes; ++p) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      int code = 0;
      try {
        auto backend = make_backend(args, servers);
        dogpile::CacheRegion region(backend, quiet_options());
        std::vector<std::jthread> pool;
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            const int slot = p * threads + t;
            // As in a running service: this thread's connection exists, and the
            // region has read its invalidation record, before the race.
            (void)region.get<std::string>("warm-up");
            shared.ready.fetch_add(1);
            while (!shared.go.load()) std::this_thread::yield();
            const double t0 = now_us();
            bool creator = false;
            body(region, *backend, creator);
            shared.latency_us[slot] = now_us() - t0;
            shared.was_creator[slot] = creator;
          });
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "herd worker: %s\n", e.what());
        code = 1;
      }
      std::fflush(nullptr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  while (shared.ready.load() < processes * threads) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(50ms);  // every thread is spinning on `go`
  shared.go = true;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("worker failed");
  }
  return {shared.latency_us, shared.latency_us + processes * threads};
}

int bench_herd(const Args& args) {
  Server server(args);
  const int processes = static_cast<int>(args.num("processes", 4));
  const int threads = static_cast<int>(args.num("threads", 16));
  if (processes * threads > 8 * 64) throw std::invalid_argument("at most 512 callers");
  const auto creator_ms = args.num("creator-ms", 200);
  const std::string mode = args.str("mode", "cold");
  const std::string name = named(args, fmt::format("herd_{}_{}x{}", mode, processes, threads));
  const std::string key = name + ":" + std::to_string(::getpid());

  if (mode == "stale") {
    // Expired 30 s ago (the expiration is 1 h), within the 60 s stale grace.
    dogpile::ManualClock past(dogpile::system_clock().now() - std::chrono::hours(1) - 30s);
    auto options = quiet_options();
    options.clock = &past;
    options.clock_sync = std::nullopt;  // trust the past clock: the value is written old
    dogpile::CacheRegion writer(make_backend(args, server.options()), options);
    writer.set(key, std::string("old value"));
  }
  auto shared = static_cast<HerdShared*>(::mmap(nullptr, sizeof(HerdShared), PROT_READ | PROT_WRITE,
                                                MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (shared) HerdShared();
  const auto latencies =
      run_herd(args, *shared, processes, threads, server.options(),
               [&](dogpile::CacheRegion& region, dogpile::Backend&, bool& creator) {
                 dogpile::Outcome outcome{};
                 auto o = dogpile::CallOptions{.outcome = &outcome};
                 const std::string v = region.get_or_create(
                     key,
                     [&] {
                       shared->creator_calls.fetch_add(1);
                       std::this_thread::sleep_for(std::chrono::milliseconds(creator_ms));
                       return std::string("new value");
                     },
                     o);
                 creator = outcome == dogpile::Outcome::created;
                 if (v != (mode == "cold" || creator ? "new value" : "old value")) shared->wrong++;
               });
  std::vector<double> waits_ms, others_ms;
  for (int i = 0; i < processes * threads; ++i) {
    waits_ms.push_back(latencies[i] / 1000.0);
    if (!shared->was_creator[i]) others_ms.push_back(latencies[i] / 1000.0);
  }
  figure(name + "_creator_calls", shared->creator_calls.load(), "calls");
  figure(name + "_wrong_values", shared->wrong.load(), "calls");
  if (mode == "cold") {
    figure(name + "_wait_p50", percentile(waits_ms, 50), "ms");
    figure(name + "_wait_p99", percentile(waits_ms, 99), "ms");
    figure(name + "_wait_max", percentile(waits_ms, 100), "ms");
    figure(name + "_wait_p99_over_creator", percentile(waits_ms, 99) - creator_ms, "ms");
  } else {
    figure(name + "_others_p50", percentile(others_ms, 50), "ms");
    figure(name + "_others_p99", percentile(others_ms, 99), "ms");
    figure(name + "_others_max", percentile(others_ms, 100), "ms");
    // The same callers, released the same way, each doing one raw get.
    auto raw_shared = static_cast<HerdShared*>(::mmap(
        nullptr, sizeof(HerdShared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    new (raw_shared) HerdShared();
    const std::string backend_key =
        dogpile::CacheRegion(make_backend(args, server.options()), quiet_options())
            .backend_key(key);
    const auto raw = run_herd(args, *raw_shared, processes, threads, server.options(),
                              [&](dogpile::CacheRegion&, dogpile::Backend& backend, bool&) {
                                (void)backend.get(backend_key);
                              });
    std::vector<double> raw_ms;
    for (double us : raw) raw_ms.push_back(us / 1000.0);
    figure(name + "_raw_get_p99", percentile(raw_ms, 99), "ms");
    figure(name + "_others_p99_over_raw", percentile(others_ms, 99) / percentile(raw_ms, 99), "x");
  }
  if (const std::string csv = args.str("csv"); !csv.empty()) {
    std::ofstream out(csv);
    out << "wait_ms,creator\n";
    for (int i = 0; i < processes * threads; ++i) {
      out << latencies[i] / 1000.0 << ',' << (shared->was_creator[i] ? 1 : 0) << '\n';
    }
  }
  return 0;
}

// --- multi -------------------------------------------------------------------------
int bench_multi(const Args& args) {
  Server server(args);
  const int keys = static_cast<int>(args.num("keys", 100));
  const int rounds = static_cast<int>(args.num("rounds", 200));
  dogpile::CacheRegion region(make_backend(args, server.options()), quiet_options());
  std::vector<std::string> names;
  for (int k = 0; k < keys; ++k) names.push_back("multi:" + std::to_string(k));
  auto creator = [](std::span<const std::string_view> missing) {
    return std::vector<std::string>(missing.size(), std::string(100, 'v'));
  };
  region.get_or_create_multi(names, creator);  // all fresh from here on
  auto single = [] { return std::string(100, 'v'); };
  std::vector<double> multi_us, singles_us;
  for (int r = 0; r < rounds; ++r) {
    double t0 = now_us();
    if (region.get_or_create_multi(names, creator).size() != names.size()) return 1;
    multi_us.push_back(now_us() - t0);
    t0 = now_us();
    for (const auto& n : names) region.get_or_create(n, single);
    singles_us.push_back(now_us() - t0);
  }
  figure(named(args, fmt::format("multi_{}_keys", keys)), median(multi_us), "us");
  figure(named(args, fmt::format("singles_{}_keys", keys)), median(singles_us), "us");
  figure(named(args, fmt::format("multi_ratio_{}_keys", keys)),
         median(multi_us) / median(singles_us), "x");
  return 0;
}

// --- memory ------------------------------------------------------------------------
// A backend that keeps nothing: every key is a cold miss, so the region does
// its whole per-key work (flight, lock, creation) for every key, and what
// stays behind is the region's own.
class NullBackend final : public dogpile::Backend {
 public:
  void read(std::span<dogpile::KeyRead>, const dogpile::LeaseRequest&, const dogpile::Request&,
            const Visit*) override {}
  void write(std::span<dogpile::KeyWrite> items, const dogpile::Request&) override {
    for (auto& w : items) w.stored = true;
  }
  void erase(std::span<dogpile::KeyErase>, const dogpile::Request&) override {}
  std::unique_ptr<dogpile::DistributedLock> make_lock(std::string_view, dogpile::Ttl) override {
    return std::make_unique<Lock>();
  }

 private:
  class Lock final : public dogpile::DistributedLock {
   public:
    ~Lock() override { release_if_held(); }
    bool extend(const dogpile::Request&) override { return true; }
    dogpile::Ttl ttl() const noexcept override { return std::chrono::seconds(30); }

   protected:
    bool try_acquire(const dogpile::Request&) override { return true; }
    bool release_acquired(const dogpile::Request&) override { return true; }
  };
};

// --- waiting -----------------------------------------------------------------------
// A caller waits while another region creates a value that takes
// --creator-ms: its polls, and how long after the store it has the value.
// "history": the key's last creation took as long (its lock says so); the
// clocks are either this host's (one host: clock_sync off) or measured
// against memcached's after --warm-ms (as in a fleet of long-lived hosts).
int bench_waiting(const Args& args) {
  Server server(args);
  const auto creator_ms = args.num("creator-ms", 200);
  const auto warm_ms = args.num("warm-ms", 10000);
  for (const char* setup : {"no_history", "history_one_host", "history_measured_clocks"}) {
    const bool history = std::string(setup) != "no_history";
    const bool measured = std::string(setup) == "history_measured_clocks";
    auto options = quiet_options();
    options.expiration = std::chrono::minutes(10);
    if (!measured) options.clock_sync = std::nullopt;
    auto memcached = make_backend(args, server.options());
    auto counting = std::make_shared<dogpile::test::CountingPolls>(memcached);
    dogpile::CacheRegion holder(memcached, options);
    dogpile::CacheRegion waiter(counting, options);
    const std::string key = fmt::format("waiting:{}:{}:{}", creator_ms, setup, ::getpid());
    (void)holder.get_value_metadata<std::string>("warm");  // each measures its clock, if it does
    (void)waiter.get_value_metadata<std::string>("warm");
    if (measured) std::this_thread::sleep_for(std::chrono::milliseconds(warm_ms));
    if (history) {
      // The last creation took as long; then the value was removed.
      holder.get_or_create(key, [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(creator_ms));
        return std::string("first");
      });
      holder.remove(key);
    }
    std::atomic<double> stored_at{0};
    std::thread creator([&] {
      holder.get_or_create(key, [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(creator_ms));
        return std::string("made");
      });
      stored_at = now_us();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long>(20, creator_ms / 10)));
    const std::string v = waiter.get_or_create(key, [] { return std::string("second"); });
    const double seen_at = now_us();
    creator.join();
    if (v != "made") throw std::runtime_error("the waiter did not get the creator's value");
    const std::string name = named(args, fmt::format("waiting_{}ms_{}", creator_ms, setup));
    figure(name + "_polls", counting->polls.load(), "calls");
    figure(name + "_late", std::max(0.0, seen_at - stored_at.load()) / 1000.0, "ms");
  }
  return 0;
}

// --- wire --------------------------------------------------------------------------
// Requests and round trips per path, on each transport, through a counting
// proxy (integration/wire_paths.cpp). Figures: wire_<transport>_<n>_requests
// and _round_trips, after a line "# wire_<transport>_<n> <path> | <requests>".
int bench_wire(const Args&) {
  for (auto transport : {dogpile::test::Transport::classic, dogpile::test::Transport::meta}) {
    const char* name = transport == dogpile::test::Transport::meta ? "meta" : "classic";
    const auto costs = dogpile::test::measure_paths(transport);
    for (std::size_t i = 0; i < costs.size(); ++i) {
      figure(fmt::format("wire_{}_{}_requests", name, i), costs[i].requests, "calls");
      figure(fmt::format("wire_{}_{}_round_trips", name, i), costs[i].round_trips, "calls");
      fmt::print("# wire_{}_{} {} | {}\n", name, i, costs[i].path, costs[i].what);
    }
  }
  return 0;
}

double rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) / 1048576.0;
}

int bench_memory(const Args& args) {
  const long keys = args.num("keys", 1000000);
  const int threads = 4;
  dogpile::CacheRegion region(std::make_shared<NullBackend>(), quiet_options());
  // Warm up the allocator and the thread pool's arenas before the baseline.
  for (int i = 0; i < 1000; ++i) region.get_or_create("warm" + std::to_string(i), [] { return 1; });
  const double before = rss_mb();
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (long i = t; i < keys; i += threads) {
          region.get_or_create("key:" + std::to_string(i), [i] { return std::to_string(i); });
        }
      });
    }
  }
  const double after = rss_mb();
  figure("memory_keys", static_cast<double>(keys), "keys");
  figure("memory_registry_entries", static_cast<double>(region.in_flight()), "entries");
  figure("memory_rss_before", before, "MB");
  figure("memory_rss_after", after, "MB");
  figure("memory_rss_growth", after - before, "MB");
  return region.stats().created == static_cast<std::uint64_t>(keys) + 1000 ? 0 : 1;
}

// --- compression ---------------------------------------------------------------
// A --size-byte value of JSON-like records (default 100 KB) cached plain and
// compressed (zstd, level 3), side by side in one run: the bytes of the item
// on the wire, and per call (medians, the two paths alternating call by
// call) a fresh hit and a store through set(). Then a 2 MiB value, above
// memcached's 1 MiB item limit: whether each way gets it cached at all.
std::string records(std::size_t size) {
  std::string s = "[";
  for (std::size_t i = 0; s.size() < size; ++i) {
    s += fmt::format(R"({{"id":{},"name":"user {}","email":"user{}@example.org","active":{},)"
                     R"("roles":["reader","writer"],"score":{}}},)",
                     i, i * 7919 % 10007, i * 104729 % 1000003, i % 3 != 0, i * 37 % 1000);
  }
  s.resize(size - 1);
  s += ']';
  return s;
}

int bench_compression(const Args& args) {
  Server server(args);
  const auto size = static_cast<std::size_t>(args.num("size", 100 * 1024));
  const long ops = args.num("ops", 2000);
  auto backend = make_backend(args, server.options());
  auto plain_options = quiet_options();
  plain_options.key_prefix = "plain:";
  auto compressing = quiet_options();
  compressing.key_prefix = "zstd:";
  compressing.compression.threshold = 1024;
  dogpile::CacheRegion plain(backend, plain_options);
  dogpile::CacheRegion zstd(backend, compressing);
  const std::string value = records(size);
  const std::string label = fmt::format("{}KB", size / 1024);
  auto item_bytes = [&](dogpile::CacheRegion& region, const std::string& key) {
    auto item = backend->get(region.backend_key(key));
    return item ? static_cast<double>(item->data.size()) : 0.0;
  };
  dogpile::CacheRegion* regions[2] = {&plain, &zstd};
  const char* names[2] = {"plain", "zstd"};
  std::vector<double> hit[2], store[2];
  for (int r = 0; r < 2; ++r) regions[r]->set("compression:" + label, value);
  auto creator = [&]() -> std::string { throw std::runtime_error("not a fresh hit"); };
  for (long i = 0; i < ops; ++i) {
    for (int k = 0; k < 2; ++k) {
      const int r = (i + k) % 2;
      const std::string key = "compression:" + label;
      double t0 = now_us();
      if (regions[r]->get_or_create(key, creator).size() != size) return 1;
      hit[r].push_back(now_us() - t0);
      t0 = now_us();
      if (!regions[r]->set(key + ":store", value)) return 1;
      store[r].push_back(now_us() - t0);
    }
  }
  for (int r = 0; r < 2; ++r) {
    const std::string name = named(args, fmt::format("compression_{}_{}", names[r], label));
    figure(name + "_bytes", item_bytes(*regions[r], "compression:" + label), "bytes");
    figure(name + "_hit", median(hit[r]), "us");
    figure(name + "_store", median(store[r]), "us");
  }
  figure(named(args, "compression_ratio_" + label),
         item_bytes(plain, "compression:" + label) / item_bytes(zstd, "compression:" + label), "x");
  // 2 MiB: built on every call plain (memcached refuses the item), once
  // compressed.
  const std::string big = records(2 << 20);
  // A key of this run's own: a run before it may have cached one.
  const std::string big_key = fmt::format("compression:2MB:{}:{}", ::getpid(), now_us());
  for (int r = 0; r < 2; ++r) {
    int runs = 0;
    for (int i = 0; i < 3; ++i) {
      regions[r]->get_or_create(big_key, [&] {
        ++runs;
        return big;
      });
    }
    figure(named(args, fmt::format("compression_{}_2MB_creations_in_3_calls", names[r])), runs,
           "calls");
  }
  return 0;
}

// --- local hit --------------------------------------------------------------------
// A local-tier hit (100 B, --size) at 1 and at --threads (8) threads, each
// thread calling get_or_create over --keys (64) hot keys held in the tier
// for --milliseconds (1000): the median over 5 slices of the mean time per
// call, per thread. The backend holds nothing; no call reaches it.
int bench_local_hit(const Args& args) {
  const auto size = static_cast<std::size_t>(args.num("size", 100));
  const int most = static_cast<int>(args.num("threads", 8));
  const int nkeys = static_cast<int>(args.num("keys", 64));
  const double seconds = static_cast<double>(args.num("milliseconds", 1000)) / 1000.0;
  auto options = quiet_options();
  options.local = dogpile::LocalTier{.ttl = std::chrono::hours(1)};
  dogpile::CacheRegion region(std::make_shared<NullBackend>(), options);
  std::vector<std::string> keys;
  for (int k = 0; k < nkeys; ++k) {
    keys.push_back("hot:" + std::to_string(k));
    region.get_or_create(keys.back(), [&] { return std::string(size, 'v'); });
  }
  for (const int threads : {1, most}) {
    std::vector<double> slices;
    for (int slice = 0; slice < 5; ++slice) {
      std::atomic<long> calls{0};
      std::atomic<bool> stop{false};
      const double t0 = now_us();
      {
        std::vector<std::jthread> pool;
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            long n = 0;
            for (std::size_t i = static_cast<std::size_t>(t); !stop.load(std::memory_order_relaxed);
                 ++i, ++n) {
              const std::string v = region.get_or_create(keys[i % keys.size()],
                                                         [&] { return std::string(size, 'x'); });
              if (v.size() != size) std::abort();
            }
            calls.fetch_add(n);
          });
        }
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds / 5));
        stop = true;
      }
      const double elapsed_us = now_us() - t0;
      // Per call on one thread: the threads' time over their calls.
      slices.push_back(elapsed_us * threads / static_cast<double>(calls.load()));
    }
    figure(fmt::format("local_hit_{}t", threads), median(slices), "us");
  }
  return region.stats().local_hits > 0 ? 0 : 1;
}

// --- async ----------------------------------------------------------------------
// async_get_or_create on one I/O thread (an asio io_context run by this
// thread), against memcached (--transport; requests on dogpile's pool).
//  1. --callers (10,000) concurrent cold callers of one key, the creator
//     --creator-ms (200) on the pool: creator calls; each caller's wait past
//     the creator's end (p50, p99, ms); heap bytes per waiting caller
//     (glibc's in-use bytes midway through the creation, less those before,
//     over the callers), the same for as many callers of the same shape
//     awaiting a timer instead (their own coroutines: asio's frames), and
//     the difference, what a waiting call holds; the process's threads then.
//  2. --calls (100,000) at once over --keys (1,000) cold keys: all complete,
//     the time, the threads after.
//  3. fresh hits a second: --in-flight (256) coroutines each calling in a
//     loop for --milliseconds (1000), against the synchronous call on 1 and
//     32 threads in the same run.
// --phases (herd,many,hits) runs some of them.
namespace {
std::size_t threads_now() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}
}  // namespace

int bench_async(const Args& args) {
  Server server(args);
  const int callers = static_cast<int>(args.num("callers", 10000));
  const long creator_ms = args.num("creator-ms", 200);
  auto options = quiet_options();
  options.expiration = std::chrono::minutes(10);
  dogpile::CacheRegion region(make_backend(args, server.options()), options);
  (void)region.get<std::string>("warm");  // connections, the clock measured
  // A fresh memcached allocates a slab page (1 MiB) at the first store of a
  // size: 3 ms here, inside the herd's creation. A serving one has them.
  region.set("warm", std::string(100, 'w'));
  const std::size_t threads_before = threads_now();
  const std::string phases = args.str("phases", "herd,many,hits");
  auto run = [&](std::string_view phase) { return phases.find(phase) != std::string::npos; };
  std::size_t caller_bytes = 0;  // a caller's own coroutine, awaiting a parked operation
  double caller_resume_ms = 0;   // the last of them resumed, after their wake
  if (run("herd")) {
    asio::io_context io;
    std::vector<std::function<void()>> wake;  // one per caller, run once all wait
    std::size_t heap_before = 0;
    std::size_t heap_waiting = 0;
    double woken_at = 0;
    double last_woke_at = 0;
    wake.reserve(static_cast<std::size_t>(callers));
    // The same completion as async_get_or_create's, its handler parked in a
    // slot of its own (the least any operation keeps while it waits).
    auto parked = [&](auto token) {
      return asio::async_initiate<decltype(token), void(std::exception_ptr, std::string)>(
          [&](auto handler) {
            using Handler = decltype(handler);
            static std::vector<std::optional<Handler>> slots;
            if (slots.empty()) slots.resize(static_cast<std::size_t>(callers));
            auto& slot = slots[wake.size()];
            slot.emplace(std::move(handler));
            wake.push_back([&slot] {
              auto h = std::move(*slot);
              slot.reset();
              std::move(h)(nullptr, std::string(100, 'v'));
            });
            if (wake.size() == static_cast<std::size_t>(callers)) {  // all wait: measured
              heap_waiting = mallinfo2().uordblks;
              woken_at = now_us();
              for (auto& w : wake) asio::post(io, std::move(w));
            }
          },
          token);
    };
    int woke = 0;
    for (int round = 0; round < 2; ++round) {  // the first sizes the slots
      wake.clear();
      heap_before = mallinfo2().uordblks;
      for (int i = 0; i < callers; ++i) {
        asio::co_spawn(
            io,
            [&, i]() -> asio::awaitable<void> {
              const std::string v = co_await parked(asio::use_awaitable);
              woke += v.size() == 100 && i >= 0 ? 1 : 0;
              last_woke_at = now_us();
            },
            asio::detached);
      }
      io.restart();
      io.run();
    }
    if (woke != 2 * callers) std::abort();
    caller_bytes =
        (heap_waiting - std::min(heap_waiting, heap_before)) / static_cast<std::size_t>(callers);
    caller_resume_ms = (last_woke_at - woken_at) / 1000.0;
  }
  if (run("herd")) {
    asio::io_context io;
    std::atomic<int> creations{0};
    std::atomic<double> made_at{0};
    std::vector<double> done_at(static_cast<std::size_t>(callers), 0);
    const std::string key = fmt::format("async-herd:{}", ::getpid());
    const auto heap_before = mallinfo2().uordblks;
    const auto waits_before = region.stats().lock_waits;
    std::size_t heap_waiting = 0;
    std::size_t threads_waiting = 0;
    std::uint64_t measured_waiting = 0;
    // The creator measures once every other caller follows it (or midway).
    auto creator = [&] {
      creations.fetch_add(1);
      const double t0 = now_us();
      const auto until = static_cast<double>(creator_ms) * 1000;
      while (region.stats().lock_waits - waits_before < static_cast<std::uint64_t>(callers - 1) &&
             now_us() - t0 < until / 2) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      heap_waiting = mallinfo2().uordblks;
      threads_waiting = threads_now();
      measured_waiting = region.stats().lock_waits - waits_before;
      std::this_thread::sleep_for(
          std::chrono::duration<double, std::micro>(until - (now_us() - t0)));
      made_at = now_us();
      return std::string(100, 'v');
    };
    for (int i = 0; i < callers; ++i) {
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            const std::string v =
                co_await region.async_get_or_create(key, creator, asio::use_awaitable);
            if (v.size() != 100) std::abort();
            done_at[static_cast<std::size_t>(i)] = now_us();
          },
          asio::detached);
    }
    io.run();
    std::vector<double> waits;
    for (const double t : done_at) waits.push_back(std::max(0.0, t - made_at.load()) / 1000.0);
    figure("async_herd_creations", creations.load(), "calls");
    figure("async_herd_served",
           static_cast<double>(
               std::count_if(done_at.begin(), done_at.end(), [](double t) { return t > 0; })),
           "calls");
    figure("async_herd_wait_first", *std::min_element(waits.begin(), waits.end()), "ms");
    figure("async_herd_wait_p50", percentile(waits, 50), "ms");
    figure("async_herd_wait_p99", percentile(waits, 99), "ms");
    figure("async_herd_callers_alone_last_ms", caller_resume_ms, "ms");
    const double per_waiter =
        static_cast<double>(heap_waiting - std::min(heap_waiting, heap_before)) / callers;
    figure("async_herd_followers_when_measured", static_cast<double>(measured_waiting), "calls");
    figure("async_herd_bytes_per_waiter", per_waiter, "bytes");
    figure("async_herd_bytes_per_caller_coroutine", static_cast<double>(caller_bytes), "bytes");
    figure("async_herd_bytes_per_waiting_call", per_waiter - static_cast<double>(caller_bytes),
           "bytes");
    figure("async_herd_threads", static_cast<double>(threads_waiting), "threads");
    figure("async_threads_before", static_cast<double>(threads_before), "threads");
  }
  if (run("many")) {
    const int calls = static_cast<int>(args.num("calls", 100000));
    const int keys = static_cast<int>(args.num("keys", 1000));
    asio::io_context io;
    std::atomic<int> done{0};
    const double t0 = now_us();
    for (int i = 0; i < calls; ++i) {
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            const std::string key = fmt::format("async-many:{}:{}", ::getpid(), i % keys);
            (void)co_await region.async_get_or_create(
                key, [] { return std::string(100, 'm'); }, asio::use_awaitable);
            done.fetch_add(1);
          },
          asio::detached);
    }
    io.run();
    figure("async_many_completed", done.load(), "calls");
    figure("async_many_ms", (now_us() - t0) / 1000.0, "ms");
    figure("async_many_threads_after", static_cast<double>(threads_now()), "threads");
  }
  if (run("hits")) {
    const int in_flight = static_cast<int>(args.num("in-flight", 256));
    const double seconds = static_cast<double>(args.num("milliseconds", 1000)) / 1000.0;
    const std::string key = fmt::format("async-hit:{}", ::getpid());
    region.set(key, std::string(100, 'h'));
    auto creator = [] { return std::string(100, 'x'); };
    RawClient raw(dogpile::MemcachedBackend(server.options()).options());
    raw.set("raw:" + key, std::string(100, 'h'));
    // Asynchronous: in_flight coroutines on one I/O thread.
    auto async_rate = [&] {
      asio::io_context io;
      std::atomic<bool> stop{false};
      std::atomic<long> hits{0};
      for (int c = 0; c < in_flight; ++c) {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
              while (!stop.load(std::memory_order_relaxed)) {
                (void)co_await region.async_get_or_create(key, creator, asio::use_awaitable);
                hits.fetch_add(1, std::memory_order_relaxed);
              }
            },
            asio::detached);
      }
      asio::steady_timer end(io, std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(seconds)));
      end.async_wait([&](const std::error_code&) { stop = true; });
      const double t0 = now_us();
      io.run();
      return static_cast<double>(hits.load()) / ((now_us() - t0) / 1e6);
    };
    // Blocking calls on `threads` threads: get_or_create, or raw libmemcached.
    auto blocking_rate = [&](int threads, bool raw_client) {
      std::atomic<bool> halt{false};
      std::atomic<long> total{0};
      const double s0 = now_us();
      {
        std::vector<std::jthread> pool;
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&] {
            long n = 0;
            while (!halt.load(std::memory_order_relaxed)) {
              if (raw_client) {
                (void)raw.get("raw:" + key);
              } else {
                (void)region.get_or_create(key, creator);
              }
              ++n;
            }
            total += n;
          });
        }
        std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
        halt = true;
      }
      return static_cast<double>(total.load()) / ((now_us() - s0) / 1e6);
    };
    // Three rounds, each side by side in the same seconds: the figures are
    // the medians, the ratios' spread their lowest and highest.
    std::vector<double> a, s1, s32, r32, over1, over32;
    for (int round = 0; round < 3; ++round) {
      a.push_back(async_rate());
      s1.push_back(blocking_rate(1, false));
      s32.push_back(blocking_rate(32, false));
      r32.push_back(blocking_rate(32, true));
      over1.push_back(a.back() / s1.back());
      over32.push_back(a.back() / s32.back());
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    figure(fmt::format("async_hits_per_s_{}_in_flight", in_flight), median(a), "calls");
    figure("sync_hits_per_s_1t", median(s1), "calls");
    figure("sync_hits_per_s_32t", median(s32), "calls");
    figure("raw_libmemcached_hits_per_s_32t", median(r32), "calls");
    figure("async_over_sync_1t", median(over1), "x");
    figure("async_over_sync_1t_min", *std::min_element(over1.begin(), over1.end()), "x");
    figure("async_over_sync_1t_max", *std::max_element(over1.begin(), over1.end()), "x");
    figure("async_over_sync_32t", median(over32), "x");
    figure("async_over_sync_32t_min", *std::min_element(over32.begin(), over32.end()), "x");
    figure("async_over_sync_32t_max", *std::max_element(over32.begin(), over32.end()), "x");
    figure("async_over_raw_32t", median(a) / median(r32), "x");
  }
  return 0;
}

// --- local memory ---------------------------------------------------------------
// 1,000,000 distinct keys pass through a region whose local tier is bounded
// by --bound-mb: the process's resident memory grows by about the bound, not
// by the keys. The backend stores nothing, so what grows is the tier.
int bench_local_memory(const Args& args) {
  const long keys = args.num("keys", 1000000);
  const auto bound = static_cast<std::size_t>(args.num("bound-mb", 32)) << 20;
  const auto size = static_cast<std::size_t>(args.num("size", 100));
  const int threads = 4;
  auto options = quiet_options();
  options.local = dogpile::LocalTier{
      .ttl = std::chrono::hours(1), .max_entries = 10'000'000, .max_bytes = bound};
  dogpile::CacheRegion region(std::make_shared<NullBackend>(), options);
  for (int i = 0; i < 1000; ++i) {
    region.get_or_create("warm" + std::to_string(i), [] { return std::string("w"); });
  }
  const double before = rss_mb();
  double highest = before;
  std::mutex highest_mutex;
  {
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const std::string value(size, 'v');
        for (long i = t; i < keys; i += threads) {
          region.get_or_create("key:" + std::to_string(i), [&] { return value; });
          if (i % 100'000 == t) {
            const double now = rss_mb();
            std::lock_guard lock(highest_mutex);
            highest = std::max(highest, now);
          }
        }
      });
    }
  }
  const double after = rss_mb();
  const auto stats = region.stats();
  figure("local_memory_keys", static_cast<double>(keys), "keys");
  figure("local_memory_bound", static_cast<double>(bound) / 1048576.0, "MB");
  figure("local_memory_entries", static_cast<double>(stats.local_entries), "entries");
  figure("local_memory_accounted", static_cast<double>(stats.local_bytes) / 1048576.0, "MB");
  figure("local_memory_rss_growth", std::max(after, highest) - before, "MB");
  figure("local_memory_rss_ratio",
         (std::max(after, highest) - before) * 1048576.0 / static_cast<double>(bound), "x");
  return stats.local_bytes <= bound ? 0 : 1;
}

// --- node down -------------------------------------------------------------------
// Every key's server is down (nothing listens on its port): --threads callers
// hammer --keys keys for --seconds with a --expiration-ms expiration. Prints
// the creator calls per key per expiration period, with degraded mode keeping
// values in process and without (degraded_entries = 0), side by side.
int bench_node_down(const Args& args) {
  const int threads = static_cast<int>(args.num("threads", 8));
  const int nkeys = static_cast<int>(args.num("keys", 20));
  const auto run_for = std::chrono::milliseconds(args.num("seconds", 3) * 1000);
  const auto expiration = std::chrono::milliseconds(args.num("expiration-ms", 1000));
  const int dead_port = dogpile::test::free_port();  // nothing listens there
  const std::string config = fmt::format(
      "--SERVER=127.0.0.1:{} --CONNECT-TIMEOUT=200 --POLL-TIMEOUT=200 --RETRY-TIMEOUT=1",
      dead_port);
  for (const bool keep : {true, false}) {
    auto options = quiet_options();
    options.expiration = expiration;
    options.on_error = [](const dogpile::ErrorEvent&) {};
    if (!keep) options.degraded_entries = 0;
    dogpile::CacheRegion region(make_backend(args, config), options);
    std::vector<std::atomic<long>> creations(static_cast<std::size_t>(nkeys));
    std::atomic<long> calls{0};
    std::atomic<bool> stop{false};
    const auto started = std::chrono::steady_clock::now();
    {
      std::vector<std::jthread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          for (long i = t; !stop.load(std::memory_order_relaxed); ++i) {
            const int k = static_cast<int>(i % nkeys);
            region.get_or_create("down:" + std::to_string(k), [&] {
              creations[static_cast<std::size_t>(k)].fetch_add(1);
              return std::string(100, 'v');
            });
            calls.fetch_add(1, std::memory_order_relaxed);
          }
        });
      }
      std::this_thread::sleep_for(run_for);
      stop = true;
    }
    // The expiration periods begun while calls ran: a value made at t is
    // fresh until t + expiration, so one creation per key per period is
    // the least a process can do.
    const double periods =
        std::floor((std::chrono::steady_clock::now() - started) / expiration) + 1.0;
    long total = 0, most = 0;
    for (auto& c : creations) {
      total += c.load();
      most = std::max(most, c.load());
    }
    const std::string name =
        fmt::format("node_down_{}_{}", meta_transport(args) ? "meta" : "classic",
                    keep ? "kept" : "unprotected");
    figure(name + "_calls", static_cast<double>(calls.load()), "calls");
    figure(name + "_creations_per_key_period", static_cast<double>(total) / nkeys / periods,
           "calls");
    figure(name + "_most_per_key_period", static_cast<double>(most) / periods, "calls");
  }
  return 0;
}

// --- fleet ---------------------------------------------------------------------------
// --processes (4) x --threads (8) callers over --keys (60) keys on three
// memcached nodes; once every process has read every key, one node is
// SIGKILLed and the calls go on for --seconds (3) with a --expiration-ms
// (1000) expiration: with a gutter (--GUTTER, one more memcached) and with
// degraded mode alone, side by side. Prints, for the dead node's keys, the
// creations per key per expiration period fleet-wide, the share of calls
// that were fresh hits during the outage, and the reads that returned a
// value older than one a `set` had finished writing before the read began
// (one thread of process 0 sets a counter key every 50 ms; every caller
// reads it: must be 0).
struct FleetShared {
  std::atomic<int> ready{0};
  std::atomic<bool> outage{false};
  std::atomic<bool> stop{false};
  std::atomic<long> written{0};  // the newest generation whose set returned
  std::atomic<long> creations{0};
  std::atomic<long> calls{0};
  std::atomic<long> fresh{0};
  std::atomic<long> older_than_written{0};
  std::atomic<long> counter_reads{0};
  std::atomic<int> counter{-1};  // the counter key: one of fleet:c:<i> on the dead node
  bool on_dead[4096];
};

int bench_fleet(const Args& args) {
  const int processes = static_cast<int>(args.num("processes", 4));
  const int threads = static_cast<int>(args.num("threads", 8));
  const int nkeys = std::min(static_cast<int>(args.num("keys", 60)), 4096);
  const auto run_for = std::chrono::milliseconds(args.num("seconds", 3) * 1000);
  const auto expiration = std::chrono::milliseconds(args.num("expiration-ms", 1000));
  for (const bool with_gutter : {true, false}) {
    std::vector<std::unique_ptr<dogpile::test::MemcachedServer>> nodes;
    for (int i = 0; i < 3; ++i) nodes.push_back(std::make_unique<dogpile::test::MemcachedServer>());
    dogpile::test::MemcachedServer gutter;
    std::string config = "--CONNECT-TIMEOUT=200 --POLL-TIMEOUT=200 --RETRY-TIMEOUT=1";
    for (const auto& n : nodes) config += " " + n->options();
    if (with_gutter) config += fmt::format(" --GUTTER=127.0.0.1:{}", gutter.port());
    auto* shared = static_cast<FleetShared*>(::mmap(
        nullptr, sizeof(FleetShared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    new (shared) FleetShared();
    std::vector<pid_t> pids;
    for (int p = 0; p < processes; ++p) {
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid == 0) {
        int code = 0;
        try {
          auto options = quiet_options();
          options.expiration = expiration;
          options.on_error = [](const dogpile::ErrorEvent&) {};
          dogpile::CacheRegion region(make_backend(args, config), options);
          auto key = [](int k) { return "fleet:" + std::to_string(k); };
          for (int k = 0; k < nkeys; ++k) {
            (void)region.get_or_create(key(k), [] { return std::string(100, 'v'); });
          }
          for (int c = 0; c < 32; ++c) {  // candidates for the counter key
            (void)region.get_or_create("fleet:c:" + std::to_string(c),
                                       [] { return std::string("0"); });
          }
          std::vector<std::jthread> pool;
          for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
              shared->ready.fetch_add(1);
              while (!shared->outage.load()) std::this_thread::sleep_for(1ms);
              const std::string counter = "fleet:c:" + std::to_string(shared->counter.load());
              if (p == 0 && t == 0) {  // the writer
                for (long gen = 1; !shared->stop.load(); ++gen) {
                  if (region.set(counter, std::to_string(gen))) shared->written = gen;
                  std::this_thread::sleep_for(50ms);
                }
                return;
              }
              for (long i = t; !shared->stop.load(std::memory_order_relaxed); ++i) {
                if (i % 10 == 0) {  // the counter: never older than a finished set
                  const long before = shared->written.load();
                  const std::string got = region.get_or_create(
                      counter, [&] { return std::to_string(shared->written.load()); });
                  shared->counter_reads.fetch_add(1);
                  if (std::stol(got) < before) shared->older_than_written.fetch_add(1);
                  continue;
                }
                const int k = static_cast<int>(i % nkeys);
                dogpile::Outcome outcome{};
                (void)region.get_or_create(
                    key(k),
                    [&] {
                      if (shared->on_dead[k]) shared->creations.fetch_add(1);
                      return std::string(100, 'v');
                    },
                    &outcome);
                if (shared->on_dead[k]) {
                  shared->calls.fetch_add(1, std::memory_order_relaxed);
                  if (outcome == dogpile::Outcome::fresh) {
                    shared->fresh.fetch_add(1, std::memory_order_relaxed);
                  }
                }
              }
            });
          }
          pool.clear();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "fleet worker: %s\n", e.what());
          code = 1;
        }
        std::fflush(nullptr);
        ::_exit(code);
      }
      pids.push_back(pid);
    }
    while (shared->ready.load() < processes * threads) std::this_thread::sleep_for(1ms);
    // Which keys the node about to die holds (their values are all there now).
    for (int k = 0; k < nkeys; ++k) {
      shared->on_dead[k] = nodes[0]->raw(fmt::format("get fleet:{}\r\n", k)).starts_with("VALUE");
    }
    for (int c = 0; c < 32 && shared->counter.load() < 0; ++c) {
      if (nodes[0]->raw(fmt::format("get fleet:c:{}\r\n", c)).starts_with("VALUE"))
        shared->counter = c;
    }
    if (shared->counter.load() < 0) shared->counter = 0;  // none there: 32 keys missed a node of 3
    nodes[0]->kill();
    shared->outage = true;
    const auto started = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(run_for);
    shared->stop = true;
    for (pid_t pid : pids) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("worker failed");
    }
    const double periods =
        std::floor((std::chrono::steady_clock::now() - started) / expiration) + 1.0;
    int dead_keys = 0;
    for (int k = 0; k < nkeys; ++k) dead_keys += shared->on_dead[k] ? 1 : 0;
    const std::string name = fmt::format("fleet_{}_{}", meta_transport(args) ? "meta" : "classic",
                                         with_gutter ? "gutter" : "degraded");
    figure(name + "_dead_node_keys", dead_keys, "keys");
    figure(name + "_dead_node_calls", static_cast<double>(shared->calls.load()), "calls");
    figure(
        name + "_creations_per_key_period",
        dead_keys == 0 ? 0.0 : static_cast<double>(shared->creations.load()) / dead_keys / periods,
        "per_key_period");
    figure(name + "_dead_node_fresh_share",
           static_cast<double>(shared->fresh.load()) /
               static_cast<double>(std::max<long>(1, shared->calls.load())),
           "ratio");
    figure(name + "_counter_sets", static_cast<double>(shared->written.load()), "sets");
    figure(name + "_counter_reads", static_cast<double>(shared->counter_reads.load()), "reads");
    figure(name + "_older_than_written", static_cast<double>(shared->older_than_written.load()),
           "reads");
    ::munmap(shared, sizeof(FleetShared));
  }
  return 0;
}

// --- admission -------------------------------------------------------------------------
// The local tier's admission against plain least-recently-used, side by side
// on one stream: Zipf(--zipf, 0.99) over --keys (1,000,000) keys, a tier of
// --tier (10,000: 1%) entries, and after every 100,000 lookups a scan of
// --scan (20,000) keys asked for once. Each lookup that misses fills. Prints
// each policy's hit ratio over the Zipf lookups (the scans cannot hit), per
// run of --lookups (4,000,000), for --runs (3) seeds.
int bench_admission(const Args& args) {
  const std::size_t nkeys = static_cast<std::size_t>(args.num("keys", 1'000'000));
  const std::size_t tier = static_cast<std::size_t>(args.num("tier", 10'000));
  const long lookups = args.num("lookups", 4'000'000);
  const long scan = args.num("scan", 20'000);
  const int runs = static_cast<int>(args.num("runs", 3));
  const double s = static_cast<double>(args.num("zipf-milli", 990)) / 1000.0;
  // The Zipf distribution's cumulative weights, rank 1 the most asked for.
  std::vector<double> cdf(nkeys);
  double total = 0;
  for (std::size_t r = 0; r < nkeys; ++r) {
    total += 1.0 / std::pow(static_cast<double>(r + 1), s);
    cdf[r] = total;
  }
  const auto item = std::make_shared<const dogpile::Item>(dogpile::Item{std::string(100, 'v'), 0});
  const dogpile::SteadyTime now{};
  for (int run = 0; run < runs; ++run) {
    std::mt19937_64 random(static_cast<std::uint64_t>(run) + 1);
    std::uniform_real_distribution<double> uniform(0.0, total);
    dogpile::detail::LocalStore lfu(tier, std::size_t{1} << 30, true);
    dogpile::detail::LocalStore lru(tier, std::size_t{1} << 30, false);
    long lfu_hits = 0, lru_hits = 0, zipf_lookups = 0, one_off = 0;
    auto lookup = [&](const std::string& key, bool counted) {
      for (auto* store : {&lfu, &lru}) {
        const bool hit = store->get(key, now) != nullptr;
        if (!hit) store->put_read(key, item, now, now + std::chrono::hours(1), store->writes(key));
        if (counted && hit) ++(store == &lfu ? lfu_hits : lru_hits);
      }
    };
    std::string key;
    for (long i = 0; i < lookups; ++i) {
      const auto rank = static_cast<std::size_t>(
          std::lower_bound(cdf.begin(), cdf.end(), uniform(random)) - cdf.begin());
      key = fmt::format("z:{}", std::min(rank, nkeys - 1));
      lookup(key, true);
      ++zipf_lookups;
      if ((i + 1) % 100'000 == 0) {
        for (long j = 0; j < scan; ++j) lookup(fmt::format("once:{}", one_off++), false);
      }
    }
    const double lfu_ratio = static_cast<double>(lfu_hits) / static_cast<double>(zipf_lookups);
    const double lru_ratio = static_cast<double>(lru_hits) / static_cast<double>(zipf_lookups);
    // One line per run: scripts take the median and the spread.
    figure("admission_tinylfu_hit_ratio", lfu_ratio, "ratio");
    figure("admission_lru_hit_ratio", lru_ratio, "ratio");
    figure("admission_gain", (lfu_ratio - lru_ratio) * 100.0, "points");
  }
  return 0;
}

// --- revalidate ----------------------------------------------------------------------
// The local tier's version check against a full read, on the meta transport:
// per request, the bytes memcached wrote (its `bytes_written`) and the median
// latency, at 100 B, 10 KB and 100 KB; then what one hot key costs the wire
// per second, one thread calling get_or_create for --seconds, at local time
// to live 1 s and 100 ms, with the check and without.
int bench_revalidate(const Args& args) {
  dogpile::test::MemcachedServer server;
  auto backend = std::make_shared<dogpile::MemcachedMetaBackend>(server.options());
  const long ops = args.num("ops", 2000);
  const double seconds = static_cast<double>(args.num("milliseconds", 1000)) / 1000.0;
  // The server's own count; each `stats` reply read here adds to it, so
  // that reply's size is taken off every difference.
  auto written = [&] { return static_cast<double>(server.stats().at("bytes_written")); };
  const double stats_reply = [&] {
    const double a = written();
    return written() - a;
  }();
  for (const std::size_t size : {std::size_t{100}, std::size_t{10240}, std::size_t{102400}}) {
    const std::string key = fmt::format("revalidate:{}", size);
    backend->set(key, dogpile::Item{std::string(size, 'v'), 1}, std::chrono::minutes(10));
    for (const bool version_only : {false, true}) {
      std::vector<double> us;
      us.reserve(static_cast<std::size_t>(ops));
      const double before = written();
      for (long i = 0; i < ops; ++i) {
        dogpile::KeyRead k{.key = key};
        const double t0 = now_us();
        backend->read({&k, 1}, dogpile::LeaseRequest{.version_only = version_only}, {});
        us.push_back(now_us() - t0);
        if (k.cas == 0) throw std::runtime_error("the item is gone");
      }
      const double bytes = (written() - before - stats_reply) / static_cast<double>(ops);
      const std::string name =
          fmt::format("revalidate_{}_{}B", version_only ? "check" : "read", size);
      figure(name + "_bytes", bytes, "bytes");
      figure(name + "_latency", median(us), "us");
    }
  }
  for (const bool check : {false, true}) {
    for (const auto ttl : {std::chrono::milliseconds(1000), std::chrono::milliseconds(100)}) {
      auto options = quiet_options();
      options.clock_sync = std::nullopt;
      options.invalidation_check = std::nullopt;
      options.local = dogpile::LocalTier{.ttl = ttl, .revalidate = check};
      dogpile::CacheRegion region(backend, options);
      const std::string key = fmt::format("hot:{}:{}", check, ttl.count());
      const std::string value(102400, 'h');
      (void)region.get_or_create(key, [&] { return value; });
      const double before = written();
      const auto gets_before = server.stats().at("cmd_get");
      const double end = now_us() + seconds * 1e6;
      long calls = 0;
      while (now_us() < end) {
        if (region.get_or_create(key, [&] { return value; }).size() != value.size()) {
          throw std::runtime_error("a wrong value");
        }
        ++calls;
      }
      const double per_s = (written() - before - 2 * stats_reply) / seconds;
      const std::string name =
          fmt::format("revalidate_hot_100KB_ttl{}ms_{}", ttl.count(), check ? "check" : "read");
      figure(name + "_bytes_per_s", per_s, "bytes");
      figure(name + "_requests_per_s",
             static_cast<double>(server.stats().at("cmd_get") - gets_before) / seconds, "calls");
      figure(name + "_calls_per_s", static_cast<double>(calls) / seconds, "calls");
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s "
                 "hit|throughput|herd|multi|memory|local-memory|node-down|fleet|admission|local-"
                 "hit|waiting|wire|"
                 "compression|revalidate "
                 "[--option value ...]\n",
                 argv[0]);
    return 2;
  }
  const std::string command = argv[1];
  const Args args(argc, argv);
  try {
    if (command == "hit") return bench_hit(args);
    if (command == "throughput") return bench_throughput(args);
    if (command == "herd") return bench_herd(args);
    if (command == "multi") return bench_multi(args);
    if (command == "memory") return bench_memory(args);
    if (command == "local-memory") return bench_local_memory(args);
    if (command == "compression") return bench_compression(args);
    if (command == "node-down") return bench_node_down(args);
    if (command == "fleet") return bench_fleet(args);
    if (command == "admission") return bench_admission(args);
    if (command == "local-hit") return bench_local_hit(args);
    if (command == "async") return bench_async(args);
    if (command == "waiting") return bench_waiting(args);
    if (command == "wire") return bench_wire(args);
    if (command == "revalidate") return bench_revalidate(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", command.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown benchmark: %s\n", command.c_str());
  return 2;
}
