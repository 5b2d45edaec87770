// SPDX-License-Identifier: MIT
// The one fixture of the region's unit tests, and the one way to start
// threads together. Time is a ManualClock shared by the regions and the
// backend; threads wait for observable states, never for time.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "dogpile/memory.hpp"
#include "dogpile/region.hpp"
#include "support.hpp"

namespace dogpile::test {

struct RegionFixture {
  ManualClock clock;
  std::shared_ptr<MemoryBackend> backend =
      std::make_shared<MemoryBackend>(MemoryBackend::Options{.clock = &clock});
  std::mutex errors_mutex;
  std::vector<std::pair<ErrorKind, std::string>> errors;  // kind, "operation: message"
  std::atomic<int> creator_calls{0};

  /// `expiration`, a 60 s stale grace, this fixture's clock and error sink.
  /// Invalidation checks are off, so that request counts are exact (they are
  /// tested on their own).
  RegionOptions options(Expiration expiration = std::chrono::seconds(10)) {
    RegionOptions o;
    o.expiration = expiration;
    o.stale_grace = std::chrono::seconds(60);
    o.clock = &clock;
    o.invalidation_check = std::nullopt;
    o.clock_sync = std::nullopt;  // one clock here; the skew tests turn it on
    o.on_error = [this](const ErrorEvent& e) {
      std::lock_guard lock(errors_mutex);
      errors.emplace_back(e.kind, std::string(e.operation) + ": " + std::string(e.message));
    };
    return o;
  }

  /// options() with background regeneration on `executor`.
  RegionOptions background(std::shared_ptr<Executor> executor,
                           Expiration expiration = std::chrono::seconds(10)) {
    RegionOptions o = options(expiration);
    o.background_refresh = true;
    o.executor = std::move(executor);
    return o;
  }

  /// A creator that returns `value` and counts its calls.
  auto creator(std::string value) {
    return [this, value] {
      creator_calls.fetch_add(1);
      return value;
    };
  }

  std::size_t errors_of(ErrorKind kind) {
    std::lock_guard lock(errors_mutex);
    std::size_t n = 0;
    for (const auto& e : errors) n += e.first == kind ? 1 : 0;
    return n;
  }

  /// The backend's operations since `before`.
  MemoryBackend::Counters since(const MemoryBackend::Counters& before) {
    const auto now = backend->counters();
    return {now.gets - before.gets,
            now.get_multis - before.get_multis,
            now.sets - before.sets,
            now.adds - before.adds,
            now.cas - before.cas,
            now.removes - before.removes,
            now.lock_releases - before.lock_releases,
            now.lock_extends - before.lock_extends};
  }

  /// Whether nobody holds `key`'s lock in `region` (tries it, and gives it back).
  bool lock_is_free(CacheRegion& region, std::string_view key) {
    auto lock = backend->make_lock(region.backend_key(key), std::chrono::seconds(30));
    if (!lock->try_lock()) return false;
    lock->unlock();
    return true;
  }

  /// Advances the clock by `step` once at least `sleepers` threads are
  /// pausing between polls on it.
  void advance_when_sleeping(Duration step, int sleepers = 1) {
    eventually([&] { return clock.sleepers() >= sleepers; });
    clock.advance(step);
  }

  /// Advances the clock by `step` whenever a thread waits on it for a time
  /// (a poll's pause, a deadline, the lock keeper), until `done()`; false if
  /// that does not happen within `limit` steps (which only turns a hang into
  /// a failure).
  template <class Done>
  bool advance_until(Done done, Duration step, int limit = 10000) {
    for (int i = 0; i < limit; ++i) {
      if (!eventually([&] { return done() || clock.waiters() > 0; })) return false;
      if (done()) return true;
      clock.advance(step);
      eventually(done, std::chrono::milliseconds(5));
    }
    return done();
  }
};

/// Runs `body(i)` on `n` threads released together; joins them.
template <class Body>
void run_together(int n, Body body) {
  std::latch start(n);
  std::vector<std::jthread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      body(i);
    });
  }
}

/// `value` cached through a region under `key`: over two calls its loader
/// runs once, and both return `value` (compared by `same`).
template <class T, class Same = std::equal_to<>>
void check_cached_once(const T& value, std::string_view key, Same same = {}) {
  RegionFixture f;
  CacheRegion region(f.backend, f.options());
  int loads = 0;
  auto load = [&] {
    ++loads;
    return value;
  };
  CHECK(same(region.get_or_create(key, load), value));
  CHECK(same(region.get_or_create(key, load), value));
  CHECK(loads == 1);
}

}  // namespace dogpile::test
