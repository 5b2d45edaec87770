// SPDX-License-Identifier: MIT
// CacheRegion when the backend fails: get_or_create never throws a backend
// error; it reports, falls back to in-process protection and recovers.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backends.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::ErrorKind;
using dogpile::Outcome;

// A value whose decoding runs a hook once: lets a test act as another thread
// at the instant a caller judges what it read.
struct Hooked {
  std::string text;
  bool operator==(const Hooked&) const = default;
};
std::function<void()> on_decode;  // run once, then cleared

template <>
struct dogpile::Codec<Hooked> {
  static void encode(const Hooked& value, std::string& out) { out.append(value.text); }
  static std::optional<Hooked> decode(std::string_view bytes) {
    if (auto hook = std::exchange(on_decode, nullptr)) hook();
    return Hooked{std::string(bytes)};
  }
};

namespace {

// The region's fixture, its backend behind a FaultyBackend; errors recorded
// as "kind operation key: message".
struct FailingFixture : dogpile::test::RegionFixture {
  std::shared_ptr<dogpile::MemoryBackend>& memory = backend;
  std::shared_ptr<dogpile::test::FaultyBackend> faulty =
      std::make_shared<dogpile::test::FaultyBackend>(backend);
  std::vector<std::string> reported;

  CacheRegion region() {
    auto o = options();
    o.on_error = [this](const dogpile::ErrorEvent& e) {
      std::lock_guard lock(errors_mutex);
      reported.push_back(std::string(to_string(e.kind)) + " " + std::string(e.operation) + " " +
                         std::string(e.key) + ": " + std::string(e.message));
    };
    return CacheRegion(faulty, o);
  }
};

}  // namespace

TEST_SUITE("region failures") {
  TEST_CASE("a dead backend: the creator's value, no exception, every error reported") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_everything(true);
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("v"), &outcome) == "v");
    CHECK(outcome == Outcome::created);
    const auto s = region.stats();
    CHECK(s.degraded == 1);
    // The read, then the store (an add: without the lock it only fills an
    // empty key); no lock was tried after the read failed.
    CHECK(s.backend_errors == 2);
    REQUIRE(f.reported.size() == 2);
    CHECK(f.reported[0] == "backend get k: injected failure: get");
    CHECK(f.reported[1] == "backend set k: injected failure: add");
    CHECK_FALSE(region.get<std::string>("k").has_value());
    CHECK_FALSE(region.set("k", std::string("x")));
    CHECK_FALSE(region.remove("k"));
  }

  TEST_CASE("the backend comes back: values are stored and hit again") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_everything(true);
    region.get_or_create("k", f.creator("v1"));
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("v2"), &outcome) == "v1");  // kept in process
    CHECK(outcome == Outcome::fresh);
    CHECK(f.creator_calls == 1);
    CHECK(region.stats().kept_served == 1);
    f.faulty->fail_everything(false);
    // The backend answers again: what it holds (nothing) counts, not what
    // this process kept while it was away.
    CHECK(region.get_or_create("k", f.creator("v3")) == "v3");
    CHECK(region.get_or_create("k", f.creator("v4"), &outcome) == "v3");
    CHECK(outcome == Outcome::fresh);
  }

  TEST_CASE("degraded mode: one creation per key per expiration in a process, whatever the calls") {
    FailingFixture f;
    auto region = f.region();  // expiration 10 s, stale grace 60 s
    f.faulty->fail_everything(true);
    std::atomic<int> stale{0};
    for (int period = 0; period < 3; ++period) {
      dogpile::test::run_together(16, [&](int) {
        for (int i = 0; i < 50; ++i) {
          Outcome outcome{};
          const std::string v =
              region.get_or_create("k", f.creator("v" + std::to_string(period)), &outcome);
          CHECK(!v.empty());
          if (outcome == Outcome::stale) stale.fetch_add(1);
        }
      });
      f.clock.advance(11s);  // past the expiration: the kept value is stale
    }
    // 2,400 calls over three expirations: three creations, no more.
    CHECK(f.creator_calls == 3);
    CHECK(region.stats().degraded == 3);
    CHECK(region.stats().kept_served >= 2400 - 16 * 3);
  }

  TEST_CASE("degraded mode: a caller that found nothing kept takes what another kept meanwhile") {
    // Between a caller finding nothing kept for k1 and its leading k1's
    // flight, another thread creates k1 and keeps it: the caller serves that
    // value, it does not create k1 a second time.
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_everything(true);
    std::atomic<int> k1_made{0}, k2_made{0};
    region.get_or_create<Hooked>("k2", [&] {
      ++k2_made;
      return Hooked{"two"};
    });
    // One multi-get over k1 then k2 (key order): k1 is judged first (nothing
    // kept), then decoding k2's kept value lets the other thread run.
    on_decode = [&] {
      std::thread([&] {
        region.get_or_create<Hooked>("k1", [&] {
          ++k1_made;
          return Hooked{"one"};
        });
      }).join();
    };
    const auto values = region.get_or_create_multi({"k1", "k2"}, [&](auto keys) {
      std::vector<Hooked> made;
      for (auto key : keys) {
        if (key == "k1") ++k1_made;
        if (key == "k2") ++k2_made;
        made.push_back(Hooked{std::string(key)});
      }
      return made;
    });
    CHECK(on_decode == nullptr);  // the other thread did run in between
    CHECK(k1_made == 1);
    CHECK(k2_made == 1);
    CHECK(values == std::vector<Hooked>{Hooked{"one"}, Hooked{"two"}});
  }

  TEST_CASE(
      "degraded mode: a caller that found a stale kept value takes a newer one kept meanwhile") {
    // The same race once the kept value has expired: between a caller's
    // look (stale) and its lead of the flight, another thread makes and
    // keeps the next value. The caller serves it; one creation per expiration.
    FailingFixture f;
    auto region = f.region();  // expiration 10 s
    f.faulty->fail_everything(true);
    int made = 0;
    auto create = [&] {
      ++made;
      return Hooked{"v" + std::to_string(made)};
    };
    region.get_or_create<Hooked>("k", create);
    f.clock.advance(11s);  // what was kept is stale now
    // Decoding the stale value lets the other thread run.
    on_decode = [&] { std::thread([&] { region.get_or_create<Hooked>("k", create); }).join(); };
    Outcome outcome{};
    CHECK(region.get_or_create<Hooked>("k", create, &outcome) == Hooked{"v2"});
    CHECK(on_decode == nullptr);
    CHECK(outcome == Outcome::fresh);
    CHECK(made == 2);
  }

  TEST_CASE("degraded mode: this process's set and remove win over what it kept") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_everything(true);
    region.get_or_create("k", f.creator("kept"));
    CHECK_FALSE(region.remove("k"));  // the backend fails, but the kept value is gone
    CHECK(region.get_or_create("k", f.creator("again")) == "again");
    CHECK_FALSE(region.set("k", std::string("written")));
    CHECK(region.get_or_create("k", f.creator("third")) == "third");
    CHECK(f.creator_calls == 3);
  }

  TEST_CASE("degraded mode keeps nothing when told to keep no entries") {
    FailingFixture f;
    auto o = f.options();
    o.degraded_entries = 0;
    CacheRegion region(f.faulty, o);
    f.faulty->fail_everything(true);
    region.get_or_create("k", f.creator("v1"));
    region.get_or_create("k", f.creator("v2"));
    CHECK(f.creator_calls == 2);
  }

  TEST_CASE("only the lock fails: the caller creates without it and stores into the empty key") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_lock = true;
    CHECK(region.get_or_create("k", f.creator("v")) == "v");
    CHECK(region.stats().degraded == 1);
    f.faulty->fail_lock = false;
    CHECK(region.get_or_create("k", f.creator("w")) == "v");
  }

  TEST_CASE("only storing fails: the value is returned and the next call creates again") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_store = true;
    CHECK(region.get_or_create("k", f.creator("v1")) == "v1");
    CHECK(region.get_or_create("k", f.creator("v2")) == "v2");
    CHECK(f.creator_calls == 2);
    CHECK(f.memory->size() == 0);  // and the locks were released each time
  }

  TEST_CASE("a failed lock release is reported, and if it keeps failing the lock expires") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_release = true;
    CHECK(region.get_or_create("k", f.creator("v")) == "v");
    CHECK(f.reported.size() == 1);
    CHECK(f.memory->size() == 2);  // the value, and the lock left behind
    // Tried again every 100 ms for a second, then up to 1 s apart, failing.
    CHECK(f.advance_until([&] { return f.faulty->failures.load() >= 14; }, 100ms));
    f.clock.advance(31s);           // past the default lock_timeout of 30 s: given up
    CHECK(f.memory->size() == 1);   // the lock expired; the value lives 10 s + 60 s grace
    CHECK(f.reported.size() == 1);  // the retries are not reported one by one
  }

  TEST_CASE("a failed lock release is tried again: the lock is freed once the backend answers") {
    // A server restarting: the release fails on a connection that is still
    // marked down. Left alone, the lock would keep the key's next callers
    // waiting for lock_timeout (30 s).
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_release = true;
    CHECK(region.get_or_create("k", f.creator("v")) == "v");
    CHECK_FALSE(f.lock_is_free(region, "k"));
    f.faulty->fail_release = false;
    f.clock.advance(100ms);  // the first retry is due
    CHECK(dogpile::test::eventually([&] { return f.lock_is_free(region, "k"); }));
    // And nobody waits: a removal and the next call create at once.
    region.remove("k");
    CHECK(region.get_or_create("k", f.creator("w")) == "w");
  }

  TEST_CASE("get_or_create_multi with a dead backend: one creator call, no exception") {
    FailingFixture f;
    auto region = f.region();
    f.faulty->fail_everything(true);
    int calls = 0;
    const auto values = region.get_or_create_multi({"a", "b"}, [&](auto keys) {
      ++calls;
      return std::vector<std::string>(keys.size(), "v");
    });
    CHECK(values == std::vector<std::string>{"v", "v"});
    CHECK(calls == 1);
    CHECK(region.stats().degraded == 2);
  }
}
