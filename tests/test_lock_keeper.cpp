// SPDX-License-Identifier: MIT
// The lock keeper (internal): extends registered locks until their ticket
// ends, reports locks that were lost, gives up on creators that run past
// max_creation, runs chores, and never touches a lock afterwards. Its timers
// run on a ManualClock: the tests move time, the keeper follows.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "engine/lock_keeper.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::detail::LockKeeper;
using dogpile::test::eventually;

namespace {

class CountingLock final : public dogpile::DistributedLock {
 public:
  std::atomic<int> extends{0};
  std::atomic<bool> lose{false};      // extend() reports the lock as lost
  std::atomic<bool> released{false};  // set once the ticket is gone
  std::atomic<int> calls_after_release{0};

  bool extend(const dogpile::Request&) override {
    if (released) calls_after_release.fetch_add(1);
    extends.fetch_add(1);
    return !lose;
  }
  dogpile::Ttl ttl() const noexcept override { return 30s; }

 protected:
  bool try_acquire(const dogpile::Request&) override { return true; }
  bool release_acquired(const dogpile::Request&) override { return true; }
};

struct Reports {
  std::mutex mutex;
  std::vector<std::string> lines;
  LockKeeper::Report sink() {
    return [this](const std::string& key, LockKeeper::Event event, const std::exception* error) {
      std::lock_guard lock(mutex);
      switch (event) {
        case LockKeeper::Event::lost:
          lines.push_back(key + " lost");
          break;
        case LockKeeper::Event::failed:
          lines.push_back(key + " error " + error->what());
          break;
        case LockKeeper::Event::hung:
          lines.push_back(key + " hung");
          break;
      }
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return lines.size();
  }
};

// Advances `clock` by `step` once the keeper is asleep on it. Each test waits
// for what the step causes before the next one.
void tick(dogpile::ManualClock& clock, dogpile::Duration step) {
  REQUIRE(eventually([&] { return clock.waiters() >= 1; }));
  clock.advance(step);
}

}  // namespace

TEST_SUITE("lock keeper") {
  TEST_CASE("extends a lock every interval until its ticket ends, and not after") {
    Reports reports;
    CountingLock lock;
    dogpile::ManualClock clock;
    {
      LockKeeper keeper(clock, reports.sink());
      auto ticket = keeper.keep(lock, "k", 10s);
      for (int i = 1; i <= 3; ++i) {
        tick(clock, 10s);
        CHECK(eventually([&] { return lock.extends.load() == i; }));
      }
      tick(clock, 5s);  // half an interval: nothing
      ticket.reset();
      lock.released = true;
      clock.advance(20s);
    }  // the keeper's thread is joined here
    CHECK(lock.extends.load() == 3);
    CHECK(lock.calls_after_release.load() == 0);
    CHECK(reports.size() == 0);
  }

  TEST_CASE("a lost lock is reported once and no longer extended") {
    Reports reports;
    CountingLock lock;
    lock.lose = true;
    dogpile::ManualClock clock;
    LockKeeper keeper(clock, reports.sink());
    auto ticket = keeper.keep(lock, "k", 1s);
    tick(clock, 1s);
    CHECK(eventually([&] { return reports.size() == 1; }));
    // Another lock keeps the keeper busy for a while: the lost one stays idle.
    CountingLock other;
    auto other_ticket = keeper.keep(other, "other", 1s);
    for (int i = 1; i <= 5; ++i) {
      tick(clock, 1s);
      CHECK(eventually([&] { return other.extends.load() == i; }));
    }
    CHECK(lock.extends.load() == 1);
    CHECK(reports.lines.at(0) == "k lost");
  }

  TEST_CASE("a creator past max_creation is declared hung: no more extensions, on_hung runs") {
    Reports reports;
    CountingLock lock;
    dogpile::ManualClock clock;
    LockKeeper keeper(clock, reports.sink());
    std::atomic<int> hung{0};
    auto ticket = keeper.keep(lock, "slow", 10s, 25s, [&] { hung.fetch_add(1); });
    for (int i = 1; i <= 2; ++i) {
      tick(clock, 10s);
      CHECK(eventually([&] { return lock.extends.load() == i; }));
    }
    CHECK(hung.load() == 0);
    tick(clock, 5s);  // 25 s: hung
    CHECK(eventually([&] { return hung.load() == 1; }));
    CHECK(eventually([&] { return reports.size() == 1; }));
    CHECK(reports.lines.at(0) == "slow hung");
    // Time goes on: the lock is left to expire.
    CountingLock busy;
    auto busy_ticket = keeper.keep(busy, "busy", 10s);
    for (int i = 1; i <= 3; ++i) {
      tick(clock, 10s);
      CHECK(eventually([&] { return busy.extends.load() == i; }));
    }
    CHECK(lock.extends.load() == 2);
    CHECK(hung.load() == 1);
  }

  TEST_CASE("chores run after their delay, again after the delay they return, until nullopt") {
    Reports reports;
    dogpile::ManualClock clock;
    LockKeeper keeper(clock, reports.sink());
    std::atomic<int> runs{0};
    keeper.schedule(2s, [&]() -> std::optional<dogpile::Duration> {
      return runs.fetch_add(1) + 1 < 3 ? std::optional<dogpile::Duration>(5s) : std::nullopt;
    });
    tick(clock, 1s);
    CHECK(runs.load() == 0);
    tick(clock, 1s);
    CHECK(eventually([&] { return runs.load() == 1; }));
    tick(clock, 5s);
    CHECK(eventually([&] { return runs.load() == 2; }));
    tick(clock, 5s);
    CHECK(eventually([&] { return runs.load() == 3; }));
    // Nothing left: the keeper waits for no time at all.
    CHECK(eventually([&] { return clock.waiters() == 0; }));
    clock.advance(100s);
    CHECK(runs.load() == 3);
  }

  TEST_CASE("the interval leaves a second of memcached's rounding") {
    CHECK(LockKeeper::interval_for(4s) == 1s);
    CHECK(LockKeeper::interval_for(31s) == 10s);
  }
}
