// SPDX-License-Identifier: MIT
// CacheRegion on real memcached: the request count of a hit, herds of
// processes and threads, lock holders that die or run long, foreign bytes,
// and a server that goes away and comes back.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "../tests/processes.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/region.hpp"
#include "format/envelope.hpp"
#include "memcached_server.hpp"
#include "message_faults.hpp"
#include "quiet.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Outcome;
using dogpile::RegionOptions;
using dogpile::test::backend_for;
using dogpile::test::MemcachedServer;
using dogpile::test::now_ms;
using dogpile::test::percentile;
using dogpile::test::quiet;

namespace {

// A herd of P processes x T threads released together on one key.
template <int P, int T>
struct Herd {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int> creator_calls{0};
  std::atomic<int> finished{0};
  std::atomic<int> wrong_values{0};
  std::atomic<int> outcomes[4] = {};
  std::atomic<bool> creator_saw_all_others{false};
  double wait_ms[P * T] = {};
  bool was_creator[P * T] = {};
};

int outcome_index(Outcome o) { return static_cast<int>(o); }

// Forks P processes; in each, `make_process(p)` builds what the process
// shares (a region, say) and returns the body of its threads; T threads run
// `body(t)`, all P x T released together.
template <int P, int T, class MakeProcess>
void run_herd(Herd<P, T>& herd, MakeProcess make_process) {
  std::vector<pid_t> pids;
  for (int p = 0; p < P; ++p) {
    pids.push_back(dogpile::test::fork_worker([&, p] {
      auto body = make_process(p);
      std::vector<std::jthread> threads;
      for (int t = 0; t < T; ++t) {
        threads.emplace_back([&, t] {
          herd.ready.fetch_add(1);
          while (!herd.go.load()) std::this_thread::yield();
          body(t);
        });
      }
      return 0;
    }));
  }
  while (herd.ready.load() < P * T) std::this_thread::yield();
  herd.go = true;
  for (pid_t pid : pids) CHECK(dogpile::test::wait_worker(pid) == 0);
}

}  // namespace

TEST_SUITE("region on memcached") {
  TEST_CASE("an error names its server and a code, with no pointer or source path") {
    MemcachedServer server;
    const int port = server.port();
    server.kill();                                          // nothing listens there now
    std::vector<std::pair<std::string, std::string>> seen;  // server, code
    std::vector<std::string> messages;
    auto options = quiet({.expiration = 60s, .clock_sync = std::nullopt});
    options.on_error = [&](const dogpile::ErrorEvent& e) {
      if (e.kind != dogpile::ErrorKind::backend) return;
      seen.emplace_back(e.server, e.code);
      messages.emplace_back(e.message);
    };
    CacheRegion region(
        dogpile::test::memcached(fmt::format("--SERVER=127.0.0.1:{} --CONNECT-TIMEOUT=200", port)),
        options);
    CHECK(region.get_or_create("k", [] { return std::string("made"); }) == "made");
    REQUIRE_FALSE(seen.empty());
    const std::string where = fmt::format("127.0.0.1:{}", port);
    MESSAGE("server ", seen.front().first, ", code ", seen.front().second, ": ", messages.front());
    // The first request finds the port closed; later ones may find the
    // server marked down for the retry interval.
    CHECK(seen.front().second == "CONNECTION_FAILURE");
    for (const auto& [name, code] : seen) {
      CHECK(name == where);
      CHECK((code == "CONNECTION_FAILURE" || code == "SERVER_MARKED_DOWN"));
    }
    // The first message a user sees says what is wrong, first.
    CHECK(messages.front().rfind("cannot reach memcached at " + where + " (connection refused)",
                                 0) == 0);
    for (const auto& m : messages)
      CHECK_MESSAGE(dogpile::test::message_faults(m, where).empty(), m);
  }

  TEST_CASE("a fresh hit is one request to memcached: one get and nothing else") {
    MemcachedServer server;
    // Invalidation checks stay on, with an interval longer than the test:
    // the first call reads the record, the fresh hit must not.
    // (clock_sync off: its background samples are `stats` requests of their own.)
    CacheRegion region(backend_for(server), quiet({.expiration = 60s,
                                                   .clock_sync = std::nullopt,
                                                   .invalidation_check = std::chrono::hours(1)}));
    region.get_or_create("user:42", [] { return std::string(100, 'v'); });
    const auto before = server.stats();
    Outcome outcome{};
    CHECK(region.get_or_create(
              "user:42", [] { return std::string("unused"); }, &outcome) == std::string(100, 'v'));
    CHECK(outcome == Outcome::fresh);
    const auto after = server.stats();
    auto delta = [&](const char* stat) { return after.at(stat) - before.at(stat); };
    CHECK(delta("cmd_get") == 1);
    CHECK(delta("get_hits") == 1);
    CHECK(delta("get_misses") == 0);
    CHECK(delta("cmd_set") == 0);
    CHECK(delta("cmd_touch") == 0);
    CHECK(delta("delete_hits") + delta("delete_misses") == 0);
    CHECK(delta("cas_hits") + delta("cas_misses") + delta("cas_badval") == 0);
    CHECK(delta("incr_hits") + delta("incr_misses") == 0);
    // The bytes the server read: the second `stats` request, and exactly one
    // read — "gets user:42\r\n", or the meta read that would take the lease
    // on a miss or a stale value, with its opaque (" O" and 1 to 3 digits:
    // room for no other request, the shortest being "mn\r\n").
    const dogpile::RegionOptions defaults;
    const std::string read =
        dogpile::test::transport() == dogpile::test::Transport::meta
            ? "mg user:42 N" + std::to_string(defaults.lock_timeout.count()) + " R" +
                  std::to_string(
                      std::chrono::ceil<std::chrono::seconds>(defaults.stale_grace).count()) +
                  " v f c t\r\n"
            : "gets user:42\r\n";
    const auto expected = static_cast<std::int64_t>(std::string("stats\r\n").size() + read.size());
    if (dogpile::test::transport() == dogpile::test::Transport::meta) {
      CHECK(delta("bytes_read") >= expected + 3);
      CHECK(delta("bytes_read") <= expected + 5);
    } else {
      CHECK(delta("bytes_read") == expected);
    }
  }

  TEST_CASE("cold herd, 4 processes x 16 threads: the creator runs exactly once") {
    MemcachedServer server;
    constexpr int P = 4, T = 16;
    dogpile::test::Shared<Herd<P, T>> herd;
    run_herd(*herd, [&](int p) {
      auto region = std::make_shared<CacheRegion>(backend_for(server), quiet({.expiration = 60s}));
      return [&, p, region](int t) {
        const double start = now_ms();
        Outcome outcome{};
        const auto v = region->get_or_create(
            "cold-key",
            [&] {
              herd->creator_calls.fetch_add(1);
              std::this_thread::sleep_for(200ms);
              return std::string("the value");
            },
            &outcome);
        herd->wait_ms[p * T + t] = now_ms() - start;
        if (v != "the value") herd->wrong_values.fetch_add(1);
        herd->outcomes[outcome_index(outcome)].fetch_add(1);
      };
    });

    CHECK(herd->creator_calls.load() == 1);
    CHECK(herd->wrong_values.load() == 0);
    CHECK(herd->outcomes[outcome_index(Outcome::created)].load() == 1);
    CHECK(herd->outcomes[outcome_index(Outcome::waited)].load() == P * T - 1);
    std::vector<double> waits(herd->wait_ms, herd->wait_ms + P * T);
    std::printf(
        "cold herd %dx%d, creator 200 ms: creator calls %d, wait p50 %.1f ms, p99 %.1f ms, "
        "max %.1f ms\n",
        P, T, herd->creator_calls.load(), percentile(waits, 50), percentile(waits, 99),
        percentile(waits, 100));
  }

  TEST_CASE("stale herd, 4 processes x 16 threads: one creator, and no one else waits for it") {
    MemcachedServer server;
    constexpr int P = 4, T = 16;
    {
      // A value created 11 s ago: expired (10 s), within the grace (60 s).
      // (Written by a host 11 s behind that trusts its clock: no clock_sync.)
      dogpile::ManualClock past(dogpile::system_clock().now() - 11s);
      CacheRegion writer(backend_for(server),
                         quiet({.expiration = 10s, .clock = &past, .clock_sync = std::nullopt}));
      REQUIRE(writer.set("hot-key", std::string("old value")));
    }
    dogpile::test::Shared<Herd<P, T>> herd;
    run_herd(*herd, [&](int p) {
      auto region = std::make_shared<CacheRegion>(backend_for(server), quiet({.expiration = 10s}));
      return [&, p, region](int t) {
        const double start = now_ms();
        Outcome outcome{};
        const auto v = region->get_or_create(
            "hot-key",
            [&] {
              herd->creator_calls.fetch_add(1);
              // Finish only once every other caller has returned: had any of
              // them waited for this creator, that could never happen.
              const double deadline = now_ms() + 20000;
              while (herd->finished.load() < P * T - 1 && now_ms() < deadline) {
                std::this_thread::sleep_for(1ms);
              }
              herd->creator_saw_all_others = herd->finished.load() == P * T - 1;
              return std::string("new value");
            },
            &outcome);
        herd->wait_ms[p * T + t] = now_ms() - start;
        const bool creator = outcome == Outcome::created;
        if (v != (creator ? "new value" : "old value")) herd->wrong_values.fetch_add(1);
        herd->outcomes[outcome_index(outcome)].fetch_add(1);
        herd->was_creator[p * T + t] = creator;
        if (!creator) herd->finished.fetch_add(1);
      };
    });

    CHECK(herd->creator_calls.load() == 1);
    CHECK(herd->creator_saw_all_others.load());
    CHECK(herd->wrong_values.load() == 0);
    CHECK(herd->outcomes[outcome_index(Outcome::stale)].load() == P * T - 1);
    std::vector<double> others;
    for (int i = 0; i < P * T; ++i) {
      if (!herd->was_creator[i]) others.push_back(herd->wait_ms[i]);
    }
    std::printf(
        "stale herd %dx%d: creator calls %d, non-creator latency p50 %.3f ms, p99 %.3f ms, "
        "max %.3f ms\n",
        P, T, herd->creator_calls.load(), percentile(others, 50), percentile(others, 99),
        percentile(others, 100));
    CacheRegion reader(backend_for(server), quiet({.expiration = 10s}));
    CHECK(reader.get<std::string>("hot-key") == "new value");
  }

  TEST_CASE("a lock holder killed mid-creation is replaced after lock_timeout") {
    MemcachedServer server;
    struct State {
      std::atomic<bool> creating{false};
    };
    dogpile::test::Shared<State> state;
    const pid_t holder = dogpile::test::fork_worker([&] {
      CacheRegion region(backend_for(server), quiet({.expiration = 60s, .lock_timeout = 2s}));
      region.get_or_create("orphan", [&]() -> std::string {
        state->creating = true;
        for (;;) ::pause();  // killed here
      });
      return 0;
    });
    while (!state->creating.load()) std::this_thread::yield();
    ::kill(holder, SIGKILL);
    CHECK(dogpile::test::wait_worker(holder) == 128 + SIGKILL);
    const double killed_at = now_ms();

    // Eight waiters in this process: one polls for the dead holder's lock,
    // the others wait on it; all of them finish, with one new creation.
    CacheRegion region(backend_for(server), quiet({.expiration = 60s, .lock_timeout = 2s}));
    std::atomic<int> calls{0}, created{0}, replaced{0};
    {
      std::vector<std::jthread> waiters;
      for (int t = 0; t < 8; ++t) {
        waiters.emplace_back([&] {
          Outcome outcome{};
          const auto v = region.get_or_create(
              "orphan",
              [&] {
                calls.fetch_add(1);
                return std::string("replacement");
              },
              &outcome);
          if (v == "replacement") replaced.fetch_add(1);
          if (outcome == Outcome::created) created.fetch_add(1);
        });
      }
    }
    const double took = now_ms() - killed_at;
    CHECK(replaced.load() == 8);
    CHECK(created.load() == 1);
    CHECK(calls.load() == 1);
    CHECK(region.stats().lock_waits == 8);  // the poller, and seven followers
    // The dead holder's lock lives at most lock_timeout (memcached may end it
    // up to a second early) and the poll interval is at most 5 ms; the bound
    // leaves room for a loaded machine, and is far below the 30 s default.
    CHECK(took < 3000);
    std::printf("killed lock holder: replaced after %.0f ms (lock_timeout 2000 ms)\n", took);
  }

  TEST_CASE("a creator slower than lock_timeout stays the only creator") {
    MemcachedServer server;
    struct State {
      std::atomic<int> creator_calls{0};
      std::atomic<bool> creating{false};
      std::atomic<int> lock_errors{0};
    };
    dogpile::test::Shared<State> state;
    auto options = quiet({.expiration = 60s, .lock_timeout = 3s});
    const pid_t slow = dogpile::test::fork_worker([&] {
      CacheRegion region(backend_for(server), options);
      region.get_or_create("slow", [&] {
        state->creator_calls.fetch_add(1);
        state->creating = true;
        std::this_thread::sleep_for(6500ms);  // more than twice the lock's time to live
        return std::string("slow value");
      });
      state->lock_errors += static_cast<int>(region.stats().lock_errors);
      return 0;
    });
    while (!state->creating.load()) std::this_thread::yield();
    // Another process asks all along: it must wait, not create.
    CacheRegion region(backend_for(server), options);
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        CHECK(region.get_or_create("slow", [&] {
          state->creator_calls.fetch_add(1);
          return std::string("second creator");
        }) == "slow value");
      });
    }
    threads.clear();
    CHECK(dogpile::test::wait_worker(slow) == 0);
    CHECK(state->creator_calls.load() == 1);
    CHECK(state->lock_errors.load() == 0);  // the lock was never lost
    CHECK(region.stats().waited == 8);
  }

  TEST_CASE("foreign, corrupt and truncated items are misses, then overwritten") {
    MemcachedServer server;
    std::atomic<int> decode_errors{0};
    RegionOptions o{.expiration = 60s};
    o.on_error = [&](const dogpile::ErrorEvent& e) {
      if (e.kind == dogpile::ErrorKind::decode) decode_errors.fetch_add(1);
    };
    CacheRegion region(backend_for(server), o);
    const std::string key = region.backend_key("item");
    const std::uint32_t flags = dogpile::detail::kEnvelopeFlags;
    struct Bad {
      std::string data;
      std::uint32_t flags;
    };
    const std::vector<Bad> bad = {
        {"written by another client", 0},
        {"dgpE", flags},
        {"dgpE\x01\x18" + std::string(10, '\0'), flags},
        {"dgpE\x09\x18" + std::string(18, '\0') + "x", flags},
        {std::string(64, '\xff'), flags},
    };
    int expected = 0;
    for (const auto& item : bad) {
      server.raw_set(key, item.data, item.flags);
      CHECK(region.get_or_create("item", [] { return std::string("good"); }) == "good");
      CHECK(decode_errors.load() == ++expected);
      CHECK(region.get<std::string>("item") == "good");
    }
  }

  TEST_CASE("memcached going away: values from the creator, no exception, back again: hits") {
    MemcachedServer server;
    std::atomic<int> backend_errors{0};
    RegionOptions o{.expiration = 60s};
    o.on_error = [&](const dogpile::ErrorEvent& e) {
      if (e.kind == dogpile::ErrorKind::backend) backend_errors.fetch_add(1);
    };
    auto backend =
        dogpile::test::memcached(server.options() + " --RETRY-TIMEOUT=1 --CONNECT-TIMEOUT=200");
    CacheRegion region(backend, o);
    int calls = 0;
    auto creator = [&] {
      ++calls;
      return std::string("v") + std::to_string(calls);
    };
    CHECK(region.get_or_create("k", creator) == "v1");
    server.kill();
    for (int i = 0; i < 5; ++i) {
      CHECK_NOTHROW(CHECK(region.get_or_create("k", creator).starts_with("v")));
    }
    // One creation while the server is away: its value is kept in process
    // (degraded mode) and serves the four calls after it.
    CHECK(calls == 2);
    CHECK(region.stats().kept_served == 4);
    CHECK(backend_errors.load() > 0);
    server.restart();
    // Within the retry timeout (1 s), libmemcached tries the server again.
    const double restarted = now_ms();
    Outcome outcome{};
    bool hit = false;  // fresh from memcached, not from what this process kept
    while (now_ms() - restarted < 5000) {
      const auto kept_before = region.stats().kept_served;
      region.get_or_create("k", creator, &outcome);
      hit = outcome == Outcome::fresh && region.stats().kept_served == kept_before;
      if (hit) break;
      std::this_thread::sleep_for(50ms);
    }
    CHECK(hit);
    std::printf("memcached restarted: hits again after %.0f ms\n", now_ms() - restarted);
  }

  // Degraded mode's copies (SPEC I8): a copy is never older than what this
  // process has read or written of its key since, or than an invalidation it
  // knows of. Process A keeps v1 through a first outage; the server comes
  // back empty; another process writes (or removes, or invalidates); A
  // reads; in a second outage A must not serve v1.
  TEST_CASE("two outages: a degraded copy never outlives what this process saw in between") {
    for (int write = 0; write < 4; ++write) {  // set, remove, invalidate (A), invalidate (B)
      CAPTURE(write);
      MemcachedServer server;
      const std::string options = server.options() + " --RETRY-TIMEOUT=1 --CONNECT-TIMEOUT=200";
      RegionOptions o = quiet({.expiration = 60s, .invalidation_check = 100ms});
      CacheRegion a(dogpile::test::memcached(options), o);
      CacheRegion b(dogpile::test::memcached(options), o);
      int made = 0;
      auto creator = [&] { return "v" + std::to_string(++made); };
      server.kill();
      CHECK(a.get_or_create("k", creator) == "v1");  // made in the outage, kept
      CHECK(a.get_or_create("k", creator) == "v1");
      server.restart();
      // Until A's transport tries the server again, it serves its copy.
      const double restarted = now_ms();
      bool up = false;
      while (!up && now_ms() - restarted < 5000) {
        up = b.set("probe", std::string("x")) && a.get<std::string>("probe").has_value();
        if (!up) std::this_thread::sleep_for(50ms);
      }
      REQUIRE(up);
      if (write == 0) REQUIRE(b.set("k", std::string("v4")));
      if (write == 1) {
        REQUIRE(b.set("k", std::string("v3")));
        REQUIRE(b.remove("k"));
      }
      if (write == 2) a.invalidate(dogpile::Invalidation::hard);
      if (write == 3) b.invalidate(dogpile::Invalidation::hard);
      std::this_thread::sleep_for(150ms);  // A's invalidation check is due
      // A reads the key after a write; after an invalidation, another key
      // (its call reads the invalidation record): the copy of "k" is left,
      // and must be judged older than the invalidation.
      const auto seen = a.get<std::string>(write >= 2 ? "probe" : "k");
      if (write == 0) CHECK(seen == "v4");
      if (write == 1) CHECK_FALSE(seen.has_value());
      server.kill();
      std::vector<std::string> served;
      for (int i = 0; i < 5; ++i) served.push_back(a.get_or_create("k", creator));
      for (const auto& v : served) {
        CAPTURE(v);
        CHECK(v != "v1");
        if (write == 0) CHECK(v == "v4");  // the copy became what A read
      }
    }
  }

  // memcached reads an exptime over 30 days as a Unix time, and one past
  // 2038 (a signed 32-bit number) wraps or is gone at once: such values are
  // sent as the server's time plus the time to live, or as "never".
  TEST_CASE("any expiration caches: 29 days, 31 days, 68 years, 100 years, one creation each") {
    MemcachedServer server;
    using days = std::chrono::days;
    const std::pair<const char*, dogpile::Duration> cases[] = {{"29 days", days(29)},
                                                               {"31 days", days(31)},
                                                               {"68 years", days(68 * 365)},
                                                               {"100 years", days(100 * 365)}};
    for (const auto& [name, expiration] : cases) {
      CAPTURE(name);
      CacheRegion region(backend_for(server),
                         quiet({.expiration = expiration, .stale_grace = 60s, .key_prefix = "x"}));
      int created = 0;
      for (int i = 0; i < 20; ++i) {
        region.get_or_create(name, [&] {
          ++created;
          return std::string("v");
        });
      }
      CHECK(created == 1);
      // What the server was told: the time left it reports.
      const std::string reply = server.raw("mg " + region.backend_key(name) + " t\r\nmn\r\n");
      CAPTURE(reply);
      const auto t = reply.find(" t");
      REQUIRE(t != std::string::npos);
      const long long left = std::stoll(reply.substr(t + 2));
      const long long wanted =
          std::chrono::duration_cast<std::chrono::seconds>(expiration).count() + 60;
      if (wanted + std::time(nullptr) > 2147483647LL) {
        CHECK(left == -1);  // past 2038: never expires in memcached
      } else {
        CHECK(left > wanted - 5);
        CHECK(left <= wanted);
      }
      std::printf("expiration %s: %d creation in 20 calls, memcached keeps it %s\n", name, created,
                  left == -1 ? "without expiry" : (std::to_string(left) + " s").c_str());
    }
  }

  TEST_CASE("a value over the server's item limit: returned to the caller, reported, not stored") {
    MemcachedServer server;
    std::vector<std::string> errors;
    RegionOptions o{.expiration = 60s};
    o.on_error = [&](const dogpile::ErrorEvent& e) { errors.emplace_back(e.message); };
    CacheRegion region(backend_for(server), o);
    const std::string big(2 << 20, 'b');
    CHECK((region.get_or_create("big", [&] { return big; }) == big));
    for (const auto& e : errors) MESSAGE(e);
    REQUIRE(errors.size() == 1);
    // Its size, the server's limit, and the two ways out.
    CHECK(errors[0].find("bytes with its envelope, over the item size limit of 1048576 bytes") !=
          std::string::npos);
    CHECK(errors[0].find("compression.threshold") != std::string::npos);
    CHECK(errors[0].find("-I") != std::string::npos);
    CHECK_MESSAGE(
        dogpile::test::message_faults(errors[0], "127.0.0.1:" + std::to_string(server.port()))
            .empty(),
        errors[0]);
    CHECK_FALSE(region.get<std::string>("big").has_value());
  }

  TEST_CASE("a key that looks like a protocol command is just a key") {
    MemcachedServer server;
    CacheRegion region(backend_for(server), quiet({.expiration = 60s}));
    region.set("canary", std::string("alive"));
    CHECK(region.get_or_create("x\r\nflush_all\r\n", [] { return std::string("v"); }) == "v");
    CHECK(region.get<std::string>("canary") == "alive");
    CHECK(server.stats().at("cmd_flush") == 0);
  }

  TEST_CASE("get_or_create_multi: one multi-get, the creator once for the missing keys") {
    MemcachedServer server;
    CacheRegion region(backend_for(server), quiet({.expiration = 60s}));
    region.set("m1", std::string("one"));
    int calls = 0;
    auto creator = [&](std::span<const std::string_view> keys) {
      ++calls;
      std::vector<std::string> out;
      for (auto k : keys) out.push_back("made " + std::string(k));
      return out;
    };
    std::vector<std::string> keys;
    for (int i = 1; i <= 100; ++i) keys.push_back("m" + std::to_string(i));
    const auto values = region.get_or_create_multi(keys, creator);
    CHECK(calls == 1);
    CHECK(values[0] == "one");
    CHECK(values[99] == "made m100");
    const auto before = server.stats();
    CHECK(region.get_or_create_multi(keys, creator) == values);
    const auto after = server.stats();
    CHECK(calls == 1);
    CHECK(after.at("cmd_get") - before.at("cmd_get") == 100);  // one request, 100 keys
    CHECK(after.at("cmd_set") - before.at("cmd_set") == 0);
  }
}
