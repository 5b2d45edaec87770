// SPDX-License-Identifier: MIT
// The region's chores on the keeper thread (internal): a lock whose release
// failed is tried again until the backend answers, or abandoned once it would
// have expired; the fleet clock is sampled on the schedule it asks for, and a
// failed sample is reported. Timers run on a ManualClock.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "clock_server.hpp"
#include "engine/chores.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::Duration;
using dogpile::ManualClock;
using dogpile::detail::Chores;
using dogpile::detail::FleetClock;
using dogpile::detail::LockKeeper;
using dogpile::test::ClockServer;
using dogpile::test::eventually;

namespace {

// A lock whose release fails `failures` times, then succeeds.
class FlakyLock final : public dogpile::DistributedLock {
 public:
  struct Counts {
    std::atomic<int> attempts{0};
    std::atomic<int> released{0};
    std::atomic<int> gone{0};       // destroyed
    std::atomic<int> gone_held{0};  // destroyed neither released nor abandoned
  };
  FlakyLock(Counts& counts, int failures) : counts_(counts), failures_(failures) {
    REQUIRE(try_lock());
  }
  ~FlakyLock() override {
    counts_.gone.fetch_add(1);
    if (held()) counts_.gone_held.fetch_add(1);
  }
  bool extend(const dogpile::Request&) override { return true; }
  dogpile::Ttl ttl() const noexcept override { return 30s; }

 protected:
  bool try_acquire(const dogpile::Request&) override { return true; }
  bool release_acquired(const dogpile::Request&) override {
    counts_.attempts.fetch_add(1);
    if (failures_-- > 0) throw dogpile::BackendError("server away");
    counts_.released.fetch_add(1);
    return true;
  }

 private:
  Counts& counts_;
  int failures_;
};

LockKeeper::Report ignore() {
  return [](const std::string&, LockKeeper::Event, const std::exception*) {};
}

// Advances `clock` by `step` once the keeper is asleep on it.
void tick(ManualClock& clock, Duration step) {
  REQUIRE(eventually([&] { return clock.waiters() >= 1; }));
  clock.advance(step);
}

std::vector<std::unique_ptr<dogpile::DistributedLock>> locks(FlakyLock::Counts& counts,
                                                             int failures, int n = 1) {
  std::vector<std::unique_ptr<dogpile::DistributedLock>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::make_unique<FlakyLock>(counts, failures));
  return out;
}

}  // namespace

TEST_SUITE("chores") {
  TEST_CASE("the retry pause: 100 ms ten times, then doubling up to a second") {
    Duration pause = Chores::kFirstRetry;
    std::vector<Duration> pauses;
    for (int tries = 1; tries <= 16; ++tries)
      pauses.push_back(pause = Chores::retry_pause(tries, pause));
    CHECK(pauses[0] == 100ms);
    CHECK(pauses[8] == 100ms);
    CHECK(pauses[9] == 200ms);
    CHECK(pauses[10] == 400ms);
    CHECK(pauses[11] == 800ms);
    CHECK(pauses[12] == 1s);
    CHECK(pauses[15] == 1s);
  }

  TEST_CASE("a failed release is tried again until the backend answers, and not after") {
    ManualClock clock;
    LockKeeper keeper(clock, ignore());
    Chores chores(keeper, clock);
    FlakyLock::Counts counts;
    chores.release_later(locks(counts, 2, 3), 30s);
    CHECK(counts.attempts.load() == 0);  // the first retry waits 100 ms
    tick(clock, 100ms);
    CHECK(eventually([&] { return counts.attempts.load() == 3; }));
    tick(clock, 100ms);
    CHECK(eventually([&] { return counts.attempts.load() == 6; }));
    tick(clock, 100ms);
    CHECK(eventually([&] { return counts.released.load() == 3; }));
    CHECK(counts.attempts.load() == 9);
    // Nothing left: no timer, no more attempts.
    CHECK(eventually([&] { return clock.waiters() == 0; }));
    clock.advance(10s);
    CHECK(counts.attempts.load() == 9);
  }

  TEST_CASE("a release that keeps failing is abandoned once the lock would have expired") {
    ManualClock clock;
    LockKeeper keeper(clock, ignore());
    Chores chores(keeper, clock);
    FlakyLock::Counts counts;
    chores.release_later(locks(counts, 1000), 2s);
    // Ten tries 100 ms apart, then 200, 400 and 800 ms: the try at 2.4 s is
    // past the 2 s the lock had left, and the last.
    Duration pause = Chores::kFirstRetry;
    Duration elapsed{};
    int tries = 0;
    for (;;) {
      tick(clock, pause);
      elapsed += pause;
      ++tries;
      CHECK(eventually([&] { return counts.attempts.load() == tries; }));
      if (elapsed >= 2s) break;
      pause = Chores::retry_pause(tries, pause);
    }
    CHECK(tries == 13);
    CHECK(elapsed == 2400ms);
    const int attempts = counts.attempts.load();
    CHECK(counts.released.load() == 0);
    // Abandoned (no request), then dropped.
    CHECK(eventually([&] { return counts.gone.load() == 1; }));
    CHECK(counts.gone_held.load() == 0);
    CHECK(eventually([&] { return clock.waiters() == 0; }));
    clock.advance(10s);
    CHECK(counts.attempts.load() == attempts);
  }

  TEST_CASE("the fleet clock is sampled on its schedule, and a failed sample is reported") {
    ManualClock clock;
    LockKeeper keeper(clock, ignore());
    Chores chores(keeper, clock);
    ClockServer server(clock, 1s);
    FleetClock fleet(clock, server, "ref", 10s);
    std::mutex mutex;
    std::vector<std::string> errors;
    auto on_error = [&](const std::string& e) {
      std::lock_guard lock(mutex);
      errors.push_back(e);
    };
    fleet.ensure_measured();
    const int first = server.samples.load();
    REQUIRE(first == 1);
    chores.keep_measured(fleet, on_error);
    chores.keep_measured(fleet, on_error);  // once: later calls start nothing
    const auto delay = fleet.next_delay();
    REQUIRE(delay.has_value());
    tick(clock, *delay);
    CHECK(eventually([&] { return server.samples.load() == first + 1; }));
    server.fail = true;
    const auto next = fleet.next_delay();
    REQUIRE(next.has_value());
    tick(clock, *next);
    CHECK(eventually([&] {
      std::lock_guard lock(mutex);
      return errors.size() == 1;
    }));
    std::lock_guard lock(mutex);
    CHECK(errors.front() == "server away");
  }
}
