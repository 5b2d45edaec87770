// SPDX-License-Identifier: MIT
// fork() after use (SPEC I1): a region used before fork() works in the child —
// its lock keeper and executor threads exist there, its flights and queued
// jobs are the parent's and stay behind, its lock tokens differ — and the
// child can destroy it. (ThreadSanitizer cannot follow a process with threads
// across fork(): these tests run in the plain and ASan+UBSan builds; their
// names carry "fork()" so that the TSan run leaves them out.)
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <thread>

#include "dogpile/executor.hpp"
#include "engine/lock_keeper.hpp"
#include "format/lock_token.hpp"
#include "processes.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::CallOptions;
using dogpile::test::eventually;

namespace {

class CountingLock final : public dogpile::DistributedLock {
 public:
  std::atomic<int> extends{0};
  bool extend(const dogpile::Request&) override {
    extends.fetch_add(1);
    return true;
  }
  dogpile::Ttl ttl() const noexcept override { return 30s; }

 protected:
  bool try_acquire(const dogpile::Request&) override { return true; }
  bool release_acquired(const dogpile::Request&) override { return true; }
};

}  // namespace

TEST_SUITE("fork") {
  TEST_CASE("fork(): a region used before fork keeps working in the child, threads and all") {
    dogpile::test::RegionFixture f;
    auto pool = std::make_shared<dogpile::ThreadPoolExecutor>(2, 64);
    auto o = f.background(pool);
    CacheRegion region(f.backend, o);
    // Use everything before the fork: a background refresh (the pool's
    // threads), a creation holding a lock (the keeper's thread).
    region.set("stale", std::string("old"));
    f.clock.advance(11s);
    CHECK(region.get_or_create("stale", f.creator("new"), CallOptions{.background = true}) ==
          "old");
    REQUIRE(eventually([&] { return region.get<std::string>("stale") == "new"; }));
    region.get_or_create("k", f.creator("v"));

    const pid_t child = dogpile::test::fork_worker([&] {
      // The child's copy of the store: it goes on by itself from here.
      if (region.get_or_create("k", f.creator("x")) != "v") return 10;
      if (region.get_or_create("child key", f.creator("made in the child")) !=
          "made in the child") {
        return 11;
      }
      region.set("child stale", std::string("old"));
      f.clock.advance(11s);
      if (region.get_or_create("child stale", f.creator("new"), CallOptions{.background = true}) !=
          "old") {
        return 12;
      }
      // The executor's threads run the job in the child.
      if (!eventually([&] { return region.get<std::string>("child stale") == "new"; }, 10s)) {
        return 13;
      }
      return 0;  // the region is destroyed as the child exits the lambda's caller
    });
    CHECK(dogpile::test::wait_worker_within(child, 30s) == 0);
    // The parent is unaffected.
    CHECK(region.get_or_create("k", f.creator("y")) == "v");
    CHECK_FALSE(region.get<std::string>("child key").has_value());
  }

  TEST_CASE("fork(): the child destroys a region whose keeper and pool threads ran in the parent") {
    dogpile::test::RegionFixture f;
    auto pool = std::make_shared<dogpile::ThreadPoolExecutor>(2, 64);
    auto region = std::make_unique<CacheRegion>(f.backend, f.background(pool));
    std::atomic<bool> entered{false}, open{false};
    std::jthread slow([&] {
      region->get_or_create("held", [&] {
        entered = true;
        eventually([&] { return open.load(); });
        return std::string("v");
      });
    });
    REQUIRE(eventually([&] { return entered.load(); }));  // a lock held, its keeper running
    const pid_t child = dogpile::test::fork_worker([&] {
      region.reset();  // must neither hang nor abort
      pool.reset();
      return 0;
    });
    CHECK(dogpile::test::wait_worker_within(child, 30s) == 0);
    open = true;
    slow.join();
  }

  TEST_CASE("fork(): the child's keeper extends the child's locks, never the parent's") {
    dogpile::ManualClock clock;
    dogpile::detail::LockKeeper keeper(clock,
                                       [](const std::string&, auto, const std::exception*) {});
    CountingLock parents;
    auto ticket = keeper.keep(parents, "parent's", 10s);
    const pid_t child = dogpile::test::fork_worker([&] {
      CountingLock childs;
      auto mine = keeper.keep(childs, "child's", 10s);
      for (int i = 1; i <= 3; ++i) {
        if (!eventually([&] { return clock.waiters() >= 1; }, 10s)) return 10;
        clock.advance(10s);
        if (!eventually([&] { return childs.extends.load() == i; }, 10s)) return 11;
      }
      return parents.extends.load() == 0 ? 0 : 12;
    });
    CHECK(dogpile::test::wait_worker_within(child, 30s) == 0);
    CHECK(parents.extends.load() == 0);  // and the parent's own keeper has not been moved
  }

  TEST_CASE("fork(): lock tokens differ between a parent's children") {
    struct Tokens {
      std::array<dogpile::detail::LockToken, 4> token;
    };
    dogpile::test::Shared<Tokens> shared;
    (void)dogpile::detail::new_lock_token();  // the parent has drawn tokens before
    std::vector<pid_t> children;
    for (int i = 0; i < 4; ++i) {
      children.push_back(dogpile::test::fork_worker([&, i] {
        shared->token[i] = dogpile::detail::new_lock_token();
        return 0;
      }));
    }
    for (pid_t pid : children) CHECK(dogpile::test::wait_worker_within(pid, 30s) == 0);
    for (int i = 0; i < 4; ++i) {
      for (int j = i + 1; j < 4; ++j) CHECK(shared->token[i] != shared->token[j]);
    }
  }
}
