// SPDX-License-Identifier: MIT
// The dogpile algorithm, one caller at a time: which path each call takes,
// how often the value function runs, what the observers report.
#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "dogpile/lock.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::Dogpile;
using dogpile::ManualClock;
using dogpile::NeedRegeneration;
using dogpile::Outcome;
using dogpile::test::CountingMutex;
using dogpile::test::MemoryStore;

TEST_SUITE_BEGIN("lock");

TEST_CASE("acquire(creator) creates on first use and again only after expiry") {
  ManualClock clock;
  Dogpile<> lock(1h, {.clock = &clock});
  int creations = 0;
  auto create = [&] { ++creations; };

  CHECK_FALSE(lock.has_value());
  CHECK(lock.is_expired());
  CHECK_FALSE(lock.created_at().has_value());

  CHECK(lock.acquire(create).outcome() == Outcome::created);
  CHECK(creations == 1);
  CHECK(lock.created_at() == clock.now());
  CHECK_FALSE(lock.is_expired());

  CHECK(lock.acquire(create).outcome() == Outcome::fresh);
  clock.advance(1h);  // exactly the expiration: still fresh (expiry is "older than")
  CHECK(lock.acquire(create).outcome() == Outcome::fresh);
  CHECK(creations == 1);

  clock.advance(1ns);
  CHECK(lock.is_expired());
  auto acquired = lock.acquire(create);
  CHECK(acquired.created());
  CHECK(creations == 2);
  CHECK(lock.created_at() == clock.now());
}

TEST_CASE("init treats the value as created at construction") {
  ManualClock clock;
  Dogpile<> lock(10s, {.init = true, .clock = &clock});
  int creations = 0;
  CHECK(lock.created_at() == clock.now());
  CHECK(lock.acquire([&] { ++creations; }).outcome() == Outcome::fresh);
  CHECK(creations == 0);
  clock.advance(11s);
  CHECK(lock.acquire([&] { ++creations; }).outcome() == Outcome::created);
  CHECK(creations == 1);
}

TEST_CASE("without an expiration a value never goes stale") {
  ManualClock clock;
  Dogpile<> lock(dogpile::no_expiration, {.clock = &clock});
  int creations = 0;
  lock.acquire([&] { ++creations; });
  clock.advance(24h * 365 * 100);
  CHECK_FALSE(lock.is_expired());
  CHECK(lock.acquire([&] { ++creations; }).outcome() == Outcome::fresh);
  CHECK(creations == 1);
}

TEST_CASE("a fresh value never touches the mutex") {
  ManualClock clock;
  Dogpile<CountingMutex> lock(1min, {.clock = &clock});
  lock.acquire([] {});
  const int locks_after_creation = lock.mutex().locks();
  for (int i = 0; i < 100; ++i) CHECK(lock.acquire([] {}).outcome() == Outcome::fresh);
  CHECK(lock.mutex().locks() == locks_after_creation);
  CHECK(lock.mutex().failed_tries() == 0);
}

// The value-function form, with a log of the calls each access makes.
struct ValueFnFixture {
  ManualClock clock;
  MemoryStore store;
  std::vector<std::string> calls;
  int next = 0;

  std::string read() {
    calls.push_back("value_fn");
    auto entry = store.get("k");
    if (!entry) throw NeedRegeneration();
    return entry->value;
  }
  std::string create() {
    calls.push_back("creator");
    std::string value = "v" + std::to_string(++next);
    store.put("k", value, clock.now());
    return value;
  }
  template <class Lock>
  std::string access(Lock& lock, Outcome* outcome = nullptr) {
    calls.clear();
    return lock.acquire([&] { return create(); }, [&] { return read(); }, outcome);
  }
};

TEST_CASE_FIXTURE(ValueFnFixture,
                  "value function: one call per fresh access, none after creating") {
  Dogpile<> lock(1h, {.init = true, .clock = &clock});
  Outcome outcome{};

  // Nothing stored: the value function says so, the re-read under the lock
  // confirms it, the creator runs, and its value is returned without a read.
  CHECK(access(lock, &outcome) == "v1");
  CHECK(outcome == Outcome::created);
  CHECK(calls == std::vector<std::string>{"value_fn", "value_fn", "creator"});

  CHECK(access(lock, &outcome) == "v1");
  CHECK(outcome == Outcome::fresh);
  CHECK(calls == std::vector<std::string>{"value_fn"});

  clock.advance(2h);
  CHECK(access(lock, &outcome) == "v2");
  CHECK(outcome == Outcome::created);
  CHECK(calls.back() == "creator");
  CHECK(calls.size() == 3);  // read, re-read under the lock, create

  CHECK(access(lock, &outcome) == "v2");
  CHECK(calls == std::vector<std::string>{"value_fn"});
}

TEST_CASE_FIXTURE(ValueFnFixture,
                  "value function: without init the first access forces a creation") {
  Dogpile<> lock(1h, {.clock = &clock});
  store.put("k", "preexisting", clock.now());
  Outcome outcome{};
  CHECK(access(lock, &outcome) == "v1");
  CHECK(outcome == Outcome::created);
  CHECK(calls == std::vector<std::string>{"creator"});
  CHECK(access(lock) == "v1");
  CHECK(calls == std::vector<std::string>{"value_fn"});
}

TEST_CASE_FIXTURE(ValueFnFixture,
                  "value function: a value evicted early is recreated ahead of schedule") {
  Dogpile<> lock(1h, {.init = true, .clock = &clock});
  CHECK(access(lock) == "v1");
  clock.advance(1min);
  store.erase("k");
  Outcome outcome{};
  CHECK(access(lock, &outcome) == "v2");
  CHECK(outcome == Outcome::created);
}

TEST_CASE("value function returning std::optional signals absence without exceptions") {
  ManualClock clock;
  MemoryStore store;
  Dogpile<> lock(1h, {.init = true, .clock = &clock});
  int creations = 0;
  auto create = [&] {
    ++creations;
    store.put("k", "made", clock.now());
    return std::string("made");
  };
  auto read = [&]() -> std::optional<std::string> {
    auto entry = store.get("k");
    if (!entry) return std::nullopt;
    return entry->value;
  };
  CHECK(lock.acquire(create, read) == "made");
  CHECK(lock.acquire(create, read) == "made");
  CHECK(creations == 1);
}

TEST_CASE("a cached std::optional is a value, not an absence") {
  ManualClock clock;
  Dogpile<> lock(1h, {.init = true, .clock = &clock});
  std::optional<std::optional<int>> slot;  // outer: stored or not; inner: the value
  int creations = 0;
  auto create = [&] {
    ++creations;
    slot = std::optional<int>();
    return std::optional<int>();
  };
  auto read = [&]() -> std::optional<int> {
    if (!slot) throw NeedRegeneration();
    return *slot;
  };
  CHECK_FALSE(lock.acquire(create, read).has_value());
  CHECK_FALSE(lock.acquire(create, read).has_value());
  CHECK(creations == 1);
}

TEST_CASE("acquire_with_created judges expiry by the stored creation time") {
  ManualClock clock;
  MemoryStore store;
  Dogpile<> lock(1h, {.clock = &clock});
  int creations = 0;
  auto create = [&] {
    ++creations;
    dogpile::ValueAndCreated<std::string> made{"new", clock.now()};
    store.put("k", made.value, made.created_at);
    return made;
  };
  auto read = [&] { return store.get("k"); };  // std::optional<ValueAndCreated<std::string>>
  Outcome outcome{};

  SUBCASE("a stored value younger than the expiration is fresh, whoever made it") {
    store.put("k", "from another process", clock.now() - 59min);
    CHECK(lock.acquire_with_created(create, read, &outcome) == "from another process");
    CHECK(outcome == Outcome::fresh);
    CHECK(creations == 0);
  }
  SUBCASE("a stored value older than the expiration is regenerated") {
    store.put("k", "old", clock.now() - 61min);
    CHECK(lock.acquire_with_created(create, read, &outcome) == "new");
    CHECK(outcome == Outcome::created);
    CHECK(creations == 1);
    CHECK(lock.created_at() == clock.now());
  }
  SUBCASE("nothing stored: created") {
    CHECK(lock.acquire_with_created(create, read, &outcome) == "new");
    CHECK(outcome == Outcome::created);
  }
}

TEST_CASE("acquire_with_created accepts pairs and tuples and NeedRegeneration") {
  ManualClock clock;
  Dogpile<> lock(1h, {.clock = &clock});
  std::optional<std::pair<int, dogpile::TimePoint>> stored;
  int creations = 0;
  auto create_pair = [&] {
    ++creations;
    stored = std::pair{42, clock.now()};
    return *stored;
  };
  auto read_pair = [&] {
    if (!stored) throw NeedRegeneration();
    return *stored;
  };
  CHECK(lock.acquire_with_created(create_pair, read_pair) == 42);
  CHECK(lock.acquire_with_created(create_pair, read_pair) == 42);
  CHECK(creations == 1);

  auto create_tuple = [&] { return std::tuple<int, dogpile::TimePoint>{7, clock.now()}; };
  auto read_tuple = [&]() -> std::tuple<int, dogpile::TimePoint> { throw NeedRegeneration(); };
  CHECK(lock.acquire_with_created(create_tuple, read_tuple) == 7);
}

TEST_CASE("move-only values are supported") {
  ManualClock clock;
  Dogpile<> lock(1h, {.clock = &clock});
  auto create = [&] { return std::pair{std::make_unique<int>(5), clock.now()}; };
  auto read = [&]() -> std::optional<std::pair<std::unique_ptr<int>, dogpile::TimePoint>> {
    return std::nullopt;
  };
  std::unique_ptr<int> value = lock.acquire_with_created(create, read);
  REQUIRE(value != nullptr);
  CHECK(*value == 5);
}

TEST_CASE("creator exceptions propagate and leave the mutex released") {
  ManualClock clock;
  Dogpile<CountingMutex> lock(1min, {.clock = &clock});
  auto fail = [] { throw std::runtime_error("backend down"); };

  SUBCASE("while no value exists") {
    CHECK_THROWS_WITH_AS(lock.acquire(fail), "backend down", std::runtime_error);
    CHECK_FALSE(lock.has_value());
  }
  SUBCASE("while regenerating an expired value") {
    lock.acquire([] {});
    clock.advance(2min);
    const auto before = lock.created_at();
    CHECK_THROWS_AS(lock.acquire(fail), std::runtime_error);
    CHECK(lock.created_at() == before);  // a failed creation records nothing
  }
  REQUIRE(lock.mutex().try_lock());
  lock.mutex().unlock();
  CHECK(lock.acquire([] {}).outcome() == Outcome::created);
}

TEST_CASE("value function exceptions other than NeedRegeneration propagate") {
  ManualClock clock;
  Dogpile<CountingMutex> lock(1min, {.init = true, .clock = &clock});
  int reads = 0;
  // The first read says "no value"; the re-read under the lock fails hard.
  auto read = [&]() -> int {
    if (++reads == 1) throw NeedRegeneration();
    throw std::logic_error("corrupt");
  };
  CHECK_THROWS_AS(lock.acquire([] { return 1; }, read), std::logic_error);
  REQUIRE(lock.mutex().try_lock());
  lock.mutex().unlock();
}

TEST_CASE("an expired value is served stale when another caller holds the mutex") {
  ManualClock clock;
  Dogpile<CountingMutex> lock(1min, {.clock = &clock});
  lock.acquire([] {});
  clock.advance(2min);
  // Stand in for a concurrent creator by holding the mutex.
  lock.mutex().lock();
  int creations = 0;
  CHECK(lock.acquire([&] { ++creations; }).outcome() == Outcome::stale);
  CHECK(creations == 0);
  CHECK(lock.mutex().failed_tries() == 1);
  lock.mutex().unlock();
  CHECK(lock.acquire([&] { ++creations; }).outcome() == Outcome::created);
}

TEST_CASE("outcomes have names") {
  CHECK(std::string(dogpile::to_string(Outcome::fresh)) == "fresh");
  CHECK(std::string(dogpile::to_string(Outcome::stale)) == "stale");
  CHECK(std::string(dogpile::to_string(Outcome::waited)) == "waited");
  CHECK(std::string(dogpile::to_string(Outcome::created)) == "created");
}

TEST_SUITE_END();
