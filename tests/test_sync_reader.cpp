// SPDX-License-Identifier: MIT
// SyncReaderDogpile: readers hold a shared lock while they use the value; the
// creator's write phase waits for them and keeps new readers out.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/sync_reader.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::ManualClock;
using dogpile::Outcome;
using dogpile::SyncReaderDogpile;
using dogpile::test::eventually;

TEST_SUITE_BEGIN("sync-reader");

TEST_CASE("a read guard holds the reader lock until it is released") {
  ManualClock clock;
  SyncReaderDogpile lock(1h, {.clock = &clock});
  int creations = 0;
  {
    auto reading = lock.acquire([&] { ++creations; });
    CHECK(reading.outcome() == Outcome::created);
    CHECK(reading.owns_lock());
    CHECK(lock.readers() == 1);
    auto second = lock.acquire([&] { ++creations; });
    CHECK(second.outcome() == Outcome::fresh);
    CHECK(lock.readers() == 2);
    second.release();
    CHECK_FALSE(second.owns_lock());
    CHECK(lock.readers() == 1);
  }
  CHECK(lock.readers() == 0);
  CHECK(creations == 1);
}

TEST_CASE("a creator may take the dogpile or nothing") {
  ManualClock clock;
  SyncReaderDogpile lock(1h, {.clock = &clock});
  bool wrote = false;
  {
    auto reading = lock.acquire([&](SyncReaderDogpile& self) {
      auto writing = self.acquire_write_lock();
      CHECK(writing.owns_lock());
      wrote = true;
    });
  }
  CHECK(wrote);
  clock.advance(2h);
  int plain = 0;
  {
    auto reading = lock.acquire([&] { ++plain; });
  }
  CHECK(plain == 1);
}

TEST_CASE("the write phase waits for current readers and keeps new readers out") {
  // The seed's scenario: readers use the current datafile while the creator
  // prepares a new one; the swap waits for them, later readers see the new one.
  ManualClock clock;
  SyncReaderDogpile lock(1h, {.clock = &clock});
  std::mutex log_mutex;
  std::vector<std::string> log;
  auto note = [&](std::string event) {
    std::lock_guard guard(log_mutex);
    log.push_back(std::move(event));
  };
  std::atomic<int> datafile{1};

  {
    auto first = lock.acquire([&] { datafile = 1; });
  }

  // Four readers take the lock and hold it until told to finish.
  constexpr int kReaders = 4;
  std::atomic<bool> finish_reading{false};
  std::vector<std::jthread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&] {
      auto reading = lock.acquire([] {});
      const int seen = datafile.load();
      eventually([&] { return finish_reading.load(); });
      note("reader done with " + std::to_string(seen));
    });
  }
  REQUIRE(eventually([&] { return lock.readers() == kReaders; }));

  // The value expires; a creator prepares the new datafile, then swaps it in.
  clock.advance(2h);
  std::optional<Outcome> creator_outcome;
  std::jthread creator([&] {
    auto reading = lock.acquire([&](SyncReaderDogpile& self) {
      note("prepared 2");
      auto writing = self.acquire_write_lock();
      datafile = 2;
      note("swapped in 2");
    });
    creator_outcome = reading.outcome();
  });
  REQUIRE(eventually([&] { return lock.waiting_writers() == 1; }));

  // A new reader arrives: served stale by the dogpile, then held at the reader
  // lock behind the waiting writer.
  std::optional<Outcome> late_outcome;
  std::jthread late_reader([&] {
    auto reading = lock.acquire([] {});
    late_outcome = reading.outcome();
    note("late reader saw " + std::to_string(datafile.load()));
  });
  REQUIRE(eventually([&] { return lock.waiting_readers() == 1; }));
  CHECK(lock.readers() == kReaders);  // the writer is still waiting for them

  finish_reading = true;
  readers.clear();
  creator.join();
  late_reader.join();

  REQUIRE(log.size() == kReaders + 3);
  CHECK(log[0] == "prepared 2");
  for (int i = 1; i <= kReaders; ++i) CHECK(log[i] == "reader done with 1");
  CHECK(log[kReaders + 1] == "swapped in 2");
  CHECK(log[kReaders + 2] == "late reader saw 2");
  CHECK(creator_outcome == Outcome::created);
  CHECK(late_outcome == Outcome::stale);
  CHECK(lock.readers() == 0);
  CHECK(lock.waiting_writers() == 0);
}

TEST_CASE("a throwing creator leaves no reader or writer lock behind") {
  ManualClock clock;
  SyncReaderDogpile lock(1h, {.clock = &clock});
  CHECK_THROWS_AS((void)lock.acquire([](SyncReaderDogpile& self) {
    auto writing = self.acquire_write_lock();
    throw std::runtime_error("failed");
  }),
                  std::runtime_error);
  CHECK(lock.readers() == 0);
  auto reading = lock.acquire([] {});
  CHECK(reading.outcome() == Outcome::created);
}

TEST_SUITE_END();
