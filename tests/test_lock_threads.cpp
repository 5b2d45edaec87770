// SPDX-License-Identifier: MIT
// The dogpile algorithm under concurrency. Threads start together on a latch;
// the tests wait for observable states (threads inside lock(), stale callers
// returned), never for time, and assert exact counts.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/lock.hpp"
#include "region_fixture.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::Dogpile;
using dogpile::ManualClock;
using dogpile::NeedRegeneration;
using dogpile::Outcome;
using dogpile::test::CountingMutex;
using dogpile::test::eventually;
using dogpile::test::MemoryStore;
using dogpile::test::run_together;

namespace {

constexpr int kContenders = 16;

// Tracks how many creators run at once.
struct Overlap {
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::atomic<int> calls{0};
  void enter() {
    calls.fetch_add(1);
    const int now = inside.fetch_add(1) + 1;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
  }
  void leave() { inside.fetch_sub(1); }
};

}  // namespace

TEST_SUITE_BEGIN("lock-threads");

TEST_CASE("callers that find no value block until it exists and one creator runs") {
  ManualClock clock;
  MemoryStore store;
  Dogpile<CountingMutex> lock(1h, {.init = true, .clock = &clock});
  Overlap creator;
  std::atomic<bool> created{false};
  std::atomic<bool> others_blocked{false};

  auto create = [&] {
    creator.enter();
    // Hold the creation until every other caller is inside lock().
    others_blocked = eventually([&] { return lock.mutex().blocked() == kContenders - 1; });
    store.put("k", "value", clock.now());
    created = true;
    creator.leave();
    return std::string("value");
  };
  auto read = [&] {
    auto entry = store.get("k");
    if (!entry) throw NeedRegeneration();
    return entry->value;
  };

  std::vector<std::string> results(kContenders);
  std::vector<Outcome> outcomes(kContenders);
  std::vector<char> saw_creation(kContenders, 0);
  run_together(kContenders, [&](int i) {
    results[i] = lock.acquire(create, read, &outcomes[i]);
    saw_creation[i] = created.load();
  });

  CHECK(others_blocked);
  CHECK(creator.calls == 1);
  for (int i = 0; i < kContenders; ++i) {
    CHECK(results[i] == "value");
    CHECK(saw_creation[i] == 1);  // nobody returned before the value existed
  }
  CHECK(std::count(outcomes.begin(), outcomes.end(), Outcome::created) == 1);
  CHECK(std::count(outcomes.begin(), outcomes.end(), Outcome::waited) == kContenders - 1);
}

TEST_CASE("while one caller regenerates, stale callers return at once") {
  ManualClock clock;
  MemoryStore store;
  Dogpile<> lock(1min, {.clock = &clock});
  auto read = [&] { return store.get("k"); };

  // An existing value, then time passes it by.
  lock.acquire_with_created(
      [&] {
        store.put("k", "old", clock.now());
        return dogpile::ValueAndCreated<std::string>{"old", clock.now()};
      },
      read);
  clock.advance(5min);

  Overlap creator;
  std::atomic<int> stale_returned{0};
  std::atomic<bool> all_stale_returned{false};
  auto create = [&] {
    creator.enter();
    // If any stale caller blocked on the mutex, this would never become true.
    all_stale_returned = eventually([&] { return stale_returned.load() == kContenders - 1; });
    store.put("k", "new", clock.now());
    creator.leave();
    return dogpile::ValueAndCreated<std::string>{"new", clock.now()};
  };

  std::vector<std::string> results(kContenders);
  std::vector<Outcome> outcomes(kContenders);
  run_together(kContenders, [&](int i) {
    results[i] = lock.acquire_with_created(create, read, &outcomes[i]);
    if (outcomes[i] == Outcome::stale) stale_returned.fetch_add(1);
  });

  CHECK(all_stale_returned);
  CHECK(creator.calls == 1);
  int winners = 0;
  for (int i = 0; i < kContenders; ++i) {
    if (outcomes[i] == Outcome::created) {
      ++winners;
      CHECK(results[i] == "new");
    } else {
      CHECK(outcomes[i] == Outcome::stale);
      CHECK(results[i] == "old");
    }
  }
  CHECK(winners == 1);
}

TEST_CASE("the creator never runs twice at once under churn") {
  // Threads keep stepping the clock past the expiration and evicting the
  // value, so every path (fresh, stale, blocking, re-read) is taken often.
  ManualClock clock;
  MemoryStore store;
  Dogpile<> lock(3ms, {.init = true, .clock = &clock});
  Overlap creator;
  std::atomic<int> wrong_values{0};

  auto create = [&] {
    creator.enter();
    store.put("k", "v", clock.now());
    std::this_thread::yield();  // widen the window for an overlapping creator
    creator.leave();
    return std::string("v");
  };
  auto read = [&] {
    auto entry = store.get("k");
    if (!entry) throw NeedRegeneration();
    return entry->value;
  };

  constexpr int kIterations = 2000;
  run_together(12, [&](int i) {
    for (int n = 0; n < kIterations; ++n) {
      if (n % 3 == 0) clock.advance(1ms);
      if (i == 0 && n % 50 == 0) store.erase("k");
      if (lock.acquire(create, read) != "v") wrong_values.fetch_add(1);
    }
  });

  CHECK(creator.most == 1);
  CHECK(creator.calls > 1);
  CHECK(wrong_values == 0);
}

TEST_CASE("a throwing creator reaches every caller in turn and never holds the lock") {
  ManualClock clock;
  Dogpile<CountingMutex> lock(1min, {.clock = &clock});
  Overlap creator;
  std::atomic<int> failures{0};
  std::atomic<bool> first_call{true};

  auto create = [&] {
    creator.enter();
    if (first_call.exchange(false)) {
      // Make sure the others are queued on the mutex behind this creator.
      eventually([&] { return lock.mutex().blocked() == kContenders - 1; });
    }
    creator.leave();
    throw std::runtime_error("creation failed");
  };

  run_together(kContenders, [&](int) {
    try {
      lock.acquire(create);
    } catch (const std::runtime_error&) {
      failures.fetch_add(1);
    }
  });

  // Without a value, each waiter in turn finds none and tries once itself.
  CHECK(failures == kContenders);
  CHECK(creator.calls == kContenders);
  CHECK(creator.most == 1);
  REQUIRE(lock.mutex().try_lock());
  lock.mutex().unlock();
  CHECK(lock.acquire([] {}).outcome() == Outcome::created);
}

TEST_CASE("right after a creation no thread reads the value back") {
  ManualClock clock;
  MemoryStore store;
  Dogpile<> lock(1min, {.clock = &clock});
  std::atomic<int> reads_by_creator{0};
  thread_local bool i_created = false;

  auto create = [&] {
    i_created = true;
    store.put("k", "v", clock.now());
    return std::string("v");
  };
  auto read = [&] {
    if (i_created) reads_by_creator.fetch_add(1);
    auto entry = store.get("k");
    if (!entry) throw NeedRegeneration();
    return entry->value;
  };

  run_together(kContenders, [&](int) {
    i_created = false;
    (void)lock.acquire(create, read);
  });
  CHECK(reads_by_creator == 0);
}

TEST_SUITE_END();
