// The lock keeper (internal): extends registered locks until their ticket
// ends, reports locks that were lost, and never touches a lock afterwards.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "../lib/lock_keeper.hpp"
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

  bool extend() override {
    if (released) calls_after_release.fetch_add(1);
    extends.fetch_add(1);
    return !lose;
  }
  dogpile::Ttl ttl() const noexcept override { return 30s; }

 protected:
  bool try_acquire() override { return true; }
  bool release_acquired() override { return true; }
};

struct Reports {
  std::mutex mutex;
  std::vector<std::string> lines;
  LockKeeper::Report sink() {
    return [this](const std::string& key, bool lost, const char* error) {
      std::lock_guard lock(mutex);
      lines.push_back(key + (lost ? " lost" : std::string(" error ") + error));
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return lines.size();
  }
};

}  // namespace

TEST_SUITE("lock keeper") {
  TEST_CASE("extends a lock until its ticket ends, and not after") {
    Reports reports;
    CountingLock lock;
    {
      LockKeeper keeper(reports.sink());
      auto ticket = keeper.keep(lock, "k", 1ms);
      CHECK(eventually([&] { return lock.extends.load() >= 3; }));
      ticket.reset();
      lock.released = true;
    }  // the keeper's thread is joined here
    CHECK(lock.calls_after_release.load() == 0);
    CHECK(reports.size() == 0);
  }

  TEST_CASE("a lost lock is reported once and no longer extended") {
    Reports reports;
    CountingLock lock;
    lock.lose = true;
    LockKeeper keeper(reports.sink());
    auto ticket = keeper.keep(lock, "k", 1ms);
    CHECK(eventually([&] { return reports.size() == 1; }));
    const int extends = lock.extends.load();
    // Another lock keeps the keeper busy for a while: the lost one stays idle.
    CountingLock other;
    auto other_ticket = keeper.keep(other, "other", 1ms);
    CHECK(eventually([&] { return other.extends.load() >= 5; }));
    CHECK(lock.extends.load() == extends);
    CHECK(reports.lines.at(0) == "k lost");
  }

  TEST_CASE("the interval leaves a second of memcached's rounding") {
    CHECK(LockKeeper::interval_for(4s) == 1s);
    CHECK(LockKeeper::interval_for(31s) == 10s);
  }
}
