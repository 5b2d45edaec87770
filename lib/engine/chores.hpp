// SPDX-License-Identifier: MIT
// The region's chores on the keeper thread (internal): keeping the fleet
// clock measured, and trying again the lock releases that failed.
//
// A lock whose release failed (a server restarting, a connection that
// broke) would keep the key's next callers, here and elsewhere, waiting for
// its time to live. It is tried again every 100 ms for a second (a
// restarted server is usually back within its retry interval), then at
// doubling intervals up to 1 s, until released or until it would have
// expired anyway. The keeper also extends live creators' locks, so a pass
// is short: each attempt is bounded by 250 ms and a pass by 500 ms; what is
// given up on (or left when the region goes) is abandoned without a
// request, to expire in the backend.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "engine/fleet_clock.hpp"
#include "engine/lock_keeper.hpp"
#include "engine/metrics.hpp"

namespace dogpile::detail {

class Chores {
 public:
  static constexpr Duration kFirstRetry = std::chrono::milliseconds(100);
  static constexpr int kQuickRetries = 10;  // at kFirstRetry, before the pause doubles
  static constexpr Duration kLongestRetry = std::chrono::seconds(1);
  static constexpr Duration kAttempt = std::chrono::milliseconds(250);
  static constexpr Duration kPass = std::chrono::milliseconds(500);

  /// Each retried release is recorded in `metrics`, if given.
  Chores(LockKeeper& keeper, const Clock& clock, Metrics* metrics = nullptr)
      : keeper_(keeper), clock_(clock), metrics_(metrics) {}

  /// Samples `fleet` on the schedule it asks for, from the first call on
  /// (later calls cost one relaxed load). A failed sample's error goes to
  /// `on_error` (on the keeper thread).
  template <class OnError>
  void keep_measured(FleetClock& fleet, OnError&& on_error) {
    if (!clock_started_.load(std::memory_order_relaxed)) {
      start_clock(fleet, std::function<void(const std::string&)>(std::forward<OnError>(on_error)));
    }
  }

  /// Tries to release `locks` again, on the schedule above, for at most
  /// `window`; what is left then is abandoned.
  void release_later(std::vector<std::unique_ptr<DistributedLock>> locks, Duration window);

  /// The pause after the `tries`-th pass, the last pause being `previous`.
  [[nodiscard]] static Duration retry_pause(int tries, Duration previous) noexcept;

  /// In a forked child: the clock chore starts again on the next call.
  void after_fork_in_child() noexcept { clock_started_.store(false, std::memory_order_relaxed); }

 private:
  void start_clock(FleetClock& fleet, std::function<void(const std::string&)> on_error);

  LockKeeper& keeper_;
  const Clock& clock_;
  Metrics* metrics_;
  std::atomic<bool> clock_started_{false};
};

}  // namespace dogpile::detail
