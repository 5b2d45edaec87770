// SPDX-License-Identifier: MIT
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
// Phase 2 runs on each transport: MemcachedBackend (libmemcached, the classic
// text protocol, the lock an `add` of a lock item) and MemcachedMetaBackend
// (memcached's meta protocol, the lease granted in the read itself).
//
// A last phase needs no thread per caller: 10,000 requests arrive at once as
// asio coroutines on one I/O thread (async_get_or_create), the creator a
// coroutine too; one creation per key serves them all.
//
// It prints progress while running, then creator calls against the number
// of values that expired (each replaced value counted once, however many
// creators replaced it), how callers were served, their latency, and the
// memcached commands per call (from the server's own stats).
//
// scripts/demo.sh starts a memcached on a free loopback port and passes
// --memcached. Without it, everything runs in this one process on
// dogpile::MemoryBackend (threads only), and the demo says so.
//
//   dogpile_demo [--memcached OPTIONS] [--transport classic|meta|both]
//                [--processes N] [--threads N] [--keys N]
//                [--seconds S] [--creator-ms MS] [--expire-ms MS]
//                [--metrics PATH]  (one worker's Prometheus text: PATH-<transport>.prom)
#include <fmt/core.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/asio.hpp"
#include "dogpile/dogpile.hpp"

namespace {

using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

enum class Transport { classic, meta };

struct Options {
  std::string memcached;  // libmemcached options; empty: in-process MemoryBackend
  Transport transport = Transport::classic;  // of the dogpile phase
  int processes = 4;
  int threads = 8;
  int keys = 4;
  double seconds = 3.0;
  int creator_ms = 100;
  int expire_ms = 250;
  std::chrono::microseconds think{1000};  // a request's other work, between cache reads
  std::string metrics;  // where one worker writes its region's Prometheus text; empty: nowhere
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
  std::atomic<bool> metrics_written{false};
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
  if (o.transport == Transport::meta) {
    return std::make_shared<dogpile::MemcachedMetaBackend>(o.memcached);
  }
  return std::make_shared<dogpile::MemcachedBackend>(o.memcached);
}

// The commands the first server of `options` has served (its `stats`:
// reads count each key read, writes, touches and deletes), or -1.
long server_commands(const std::string& options) {
  const auto at = options.find("--SERVER=");
  if (at == std::string::npos) return -1;
  const std::string address = options.substr(at + 9, options.find(' ', at) - at - 9);
  const auto colon = address.rfind(':');
  int port = 11211;
  if (colon != std::string::npos)
    std::from_chars(address.data() + colon + 1, address.data() + address.size(), port);
  const std::string host = address.substr(0, colon);
  if (host != "127.0.0.1" && host != "localhost") return -1;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, "stats\r\n", 7, MSG_NOSIGNAL) == 7) {
    char buffer[4096];
    while (reply.find("END\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      reply.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  long total = 0;
  for (const char* name : {"cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses"}) {
    const auto p = reply.find(fmt::format("STAT {} ", name));
    if (p == std::string::npos) return -1;
    long v = 0;
    const char* begin = reply.data() + p + 6 + std::strlen(name);
    std::from_chars(begin, reply.data() + reply.size(), v);
    total += v;
  }
  return total;
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

  // The first worker to finish writes its region's metrics, as a /metrics
  // page would serve them.
  ~RegionAccess() {
    if (o_.metrics.empty() || s_.metrics_written.exchange(true)) return;
    const char* name = o_.transport == Transport::meta ? "meta" : "classic";
    std::ofstream(fmt::format("{}-{}.prom", o_.metrics, name))
        << dogpile::prometheus_text(region_, name);
  }

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
    // Each transport's phase starts cold, on keys of its own.
    r.key_prefix = o.transport == Transport::meta ? "dogpile-meta:" : "dogpile:";
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
  long commands = -1;  // memcached commands during the phase (-1: unknown)
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
  const long commands_before = server_commands(o.memcached);
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
  Summary summary = summarize(s, o);
  const long commands_after = server_commands(o.memcached);
  if (commands_before >= 0 && commands_after >= commands_before) {
    summary.commands = commands_after - commands_before;
  }
  return summary;
}

bool parse_int(std::string_view s, int& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out > 0;
}

// The threads of this process (from /proc; -1 if unknown).
int threads_now() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

// The last phase: no worker threads at all. kCallers requests arrive at once
// for the phase's cold keys, each a coroutine on one I/O thread calling
// async_get_or_create; each key's creator is a coroutine too (a timer of
// creator_ms standing in for the database). True if each key was created
// once and every caller got its value.
bool run_async_phase(const char* title, const Options& o) {
  constexpr int kCallers = 10'000;
  fmt::print("{}\n", title);
  Options meta = o;
  meta.transport = Transport::meta;
  dogpile::CacheRegion region(make_backend(meta),
                              {.expiration = std::chrono::milliseconds(o.expire_ms),
                               .key_prefix = fmt::format("demo-async-{}-", ::getpid()),
                               .on_error = [](const dogpile::ErrorEvent&) {}});
  asio::io_context io(1);
  std::atomic<int> creations{0};
  int right = 0;
  int failed = 0;
  std::vector<double> waits_ms;
  waits_ms.reserve(kCallers);
  const int threads_before = threads_now();
  int threads_during = threads_before;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kCallers; ++i) {
    const std::string key = fmt::format("key{}", i % o.keys);
    asio::co_spawn(
        io,
        [&, key]() -> asio::awaitable<void> {
          auto load = [&, key]() -> asio::awaitable<std::string> {
            creations.fetch_add(1);
            asio::steady_timer db(co_await asio::this_coro::executor,
                                  std::chrono::milliseconds(o.creator_ms));
            co_await db.async_wait(asio::use_awaitable);
            co_return "value of " + key;
          };
          const std::string v = co_await region.async_get_or_create(key, load, asio::use_awaitable);
          (v == "value of " + key ? right : failed) += 1;
          waits_ms.push_back(
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
                  .count());
        },
        [&](std::exception_ptr e) {
          if (e) ++failed;
        });
  }
  // Halfway through the creation, while every caller waits: the threads.
  asio::steady_timer sample(io, std::chrono::milliseconds(o.creator_ms / 2));
  sample.async_wait([&](std::error_code) { threads_during = threads_now(); });
  io.run();
  std::sort(waits_ms.begin(), waits_ms.end());
  auto at = [&](double q) {
    return waits_ms.empty() ? 0.0 : waits_ms[static_cast<std::size_t>(q * (waits_ms.size() - 1))];
  };
  fmt::print(
      "  {} callers of {} cold keys on one I/O thread: {} creator calls, {} served the value, "
      "{} failed\n  served after p50 {:.0f} ms, p99 {:.0f} ms, last {:.0f} ms (the creator takes "
      "{} ms); threads in this process: {} before, {} while they waited\n",
      kCallers, o.keys, creations.load(), right, failed, at(0.5), at(0.99), at(1.0), o.creator_ms,
      threads_before, threads_during);
  const bool held = creations.load() == o.keys && right == kCallers;
  fmt::print("{}\n", held ? "One creation per key served every asynchronous caller."
                          : "The asynchronous herd was NOT held back.");
  return held;
}

int usage(const char* argv0) {
  fmt::print(stderr,
             "usage: {} [--memcached OPTIONS] [--transport classic|meta|both] [--processes N] "
             "[--threads N] [--keys N] [--seconds S] [--creator-ms MS] [--expire-ms MS] "
             "[--metrics PATH]\n",
             argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string transports = "both";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    const std::string_view val = argv[++i];
    bool ok = true;
    if (arg == "--memcached") {
      o.memcached = val;
    } else if (arg == "--transport") {
      transports = val;
      ok = transports == "classic" || transports == "meta" || transports == "both";
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
    } else if (arg == "--metrics") {
      o.metrics = val;
    } else if (arg == "--seconds") {
      char* endp = nullptr;
      o.seconds = std::strtod(std::string(val).c_str(), &endp);
      ok = endp != nullptr && *endp == '\0' && o.seconds > 0;
    } else {
      ok = false;
    }
    if (!ok) return usage(argv[0]);
  }

  std::vector<Transport> dogpile_on;
  if (o.memcached.empty() || transports != "meta") dogpile_on.push_back(Transport::classic);
  if (!o.memcached.empty() && transports != "classic") dogpile_on.push_back(Transport::meta);
  if (o.memcached.empty()) {
    fmt::print(
        "No memcached given (scripts/demo.sh starts one when the memcached binary is "
        "installed):\nrunning in this one process on dogpile::MemoryBackend, {} threads.\n\n",
        o.processes * o.threads);
  } else {
    for (Transport t : dogpile_on) {
      try {
        Options check = o;
        check.transport = t;
        (void)make_backend(check);
      } catch (const std::exception& e) {
        fmt::print(stderr, "{}\n", e.what());
        return 2;
      }
    }
    fmt::print("memcached: {}\n{} processes x {} threads, each process with its own connections.\n",
               o.memcached, o.processes, o.threads);
  }
  fmt::print(
      "dogpile {} demo: {} keys, each value takes {} ms to build and is fresh for {} ms.\n"
      "Each phase runs {:.1f} s; a request does ~1 ms of other work between cache reads.\n\n",
      dogpile::version_string, o.keys, o.creator_ms, o.expire_ms, o.seconds);

  const int phases = 2 + static_cast<int>(dogpile_on.size());
  const Summary plain = run_phase<PlainAccess>(
      fmt::format("phase 1/{}: plain cache-aside (read; on a miss or expiry, build and store)",
                  phases)
          .c_str(),
      o);
  std::vector<Summary> guarded;
  std::vector<std::string> names;
  for (Transport t : dogpile_on) {
    Options phase = o;
    phase.transport = t;
    const bool meta = t == Transport::meta;
    names.push_back(o.memcached.empty() ? "dogpile" : meta ? "dogpile meta" : "dogpile classic");
    fmt::print("\n");
    guarded.push_back(run_phase<RegionAccess>(
        fmt::format("phase {}/{}: the same workload through dogpile::CacheRegion{}",
                    guarded.size() + 2, phases,
                    o.memcached.empty() ? ""
                    : meta              ? " on MemcachedMetaBackend (meta protocol, leases)"
                                        : " on MemcachedBackend (libmemcached)")
            .c_str(),
        phase));
  }

  auto row = [&](const char* name, auto plain_value, auto of) {
    std::string line = fmt::format("  {:<42} {:>12}", name, plain_value);
    for (const Summary& g : guarded) line += fmt::format(" {:>16}", of(g));
    fmt::print("{}\n", line);
  };
  auto us = [](double v) {
    return v < 1000.0 ? fmt::format("{:.0f} us", v) : fmt::format("{:.1f} ms", v / 1000.0);
  };
  auto per_call = [](const Summary& x) {
    return x.commands < 0 || x.calls == 0
               ? std::string("-")
               : fmt::format("{:.2f}", static_cast<double>(x.commands) / x.calls);
  };
  fmt::print("\nresults (latency percentiles to within 4%)\n");
  {
    std::string header = fmt::format("  {:<42} {:>12}", "", "plain cache");
    for (const auto& n : names) header += fmt::format(" {:>16}", n);
    fmt::print("{}\n", header);
  }
  row("calls", plain.calls, [](const Summary& g) { return g.calls; });
  row("calls per second", static_cast<long>(plain.calls / o.seconds),
      [&](const Summary& g) { return static_cast<long>(g.calls / o.seconds); });
  row("values expired or missing", plain.expirations,
      [](const Summary& g) { return g.expirations; });
  row("creator calls", plain.creations, [](const Summary& g) { return g.creations; });
  row("most creators at once for one key", plain.most_creators,
      [](const Summary& g) { return g.most_creators; });
  row("served stale while another rebuilt", plain.stale, [](const Summary& g) { return g.stale; });
  row("waited for another's value", "-", [](const Summary& g) { return g.waited; });
  row("calls delayed by a build (>= half of it)", plain.delayed,
      [](const Summary& g) { return g.delayed; });
  row("latency p50", us(plain.p50_us), [&](const Summary& g) { return us(g.p50_us); });
  row("latency p99", us(plain.p99_us), [&](const Summary& g) { return us(g.p99_us); });
  row("latency p99.9", us(plain.p999_us), [&](const Summary& g) { return us(g.p999_us); });
  row("latency max", us(plain.max_us), [&](const Summary& g) { return us(g.max_us); });
  if (plain.commands >= 0) {
    row("memcached commands per call", per_call(plain), per_call);
  }
  bool errors = plain.errors > 0;
  for (const Summary& g : guarded) errors = errors || g.errors > 0;
  if (errors) row("backend errors", plain.errors, [](const Summary& g) { return g.errors; });

  bool all_held = true;
  for (std::size_t i = 0; i < guarded.size(); ++i) {
    const Summary& g = guarded[i];
    const bool held = g.creations <= g.expirations && g.most_creators == 1;
    all_held = all_held && held;
    fmt::print(
        "\n{} ({}): without dogpile, {} creator calls for {} expired values ({:.1f} per value); "
        "with it, {} for {}.",
        held ? "The herd was held back" : "The herd was NOT held back", names[i], plain.creations,
        plain.expirations,
        plain.expirations ? static_cast<double>(plain.creations) / plain.expirations : 0.0,
        g.creations, g.expirations);
  }
  fmt::print("\n\n");
  const bool async_held = run_async_phase(
      fmt::format("phase {}/{}: 10,000 requests at once, as asio coroutines on one I/O thread "
                  "(async_get_or_create{})",
                  phases, phases, o.memcached.empty() ? "" : " on MemcachedMetaBackend")
          .c_str(),
      o);
  return all_held && async_held ? 0 : 1;
}
