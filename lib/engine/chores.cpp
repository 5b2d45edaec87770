// SPDX-License-Identifier: MIT
#include "engine/chores.hpp"

#include <algorithm>
#include <utility>

namespace dogpile::detail {

void Chores::start_clock(FleetClock& fleet, std::function<void(const std::string&)> on_error) {
  if (clock_started_.exchange(true)) return;
  const auto first = fleet.next_delay();
  if (!first) return;
  keeper_.schedule(*first, [&fleet, on_error = std::move(on_error)] {
    std::string error;
    if (!fleet.sample(&error) && !error.empty() && on_error) on_error(error);
    return fleet.next_delay();
  });
}

Duration Chores::retry_pause(int tries, Duration previous) noexcept {
  if (tries < kQuickRetries) return previous;
  return std::min<Duration>(previous * 2, kLongestRetry);
}

namespace {
// Abandons, when it goes, what was not released.
struct Unreleased {
  std::vector<std::unique_ptr<DistributedLock>> locks;
  Duration pause = Chores::kFirstRetry;
  int tries = 0;
  ~Unreleased() {
    for (auto& lock : locks) lock->abandon();
  }
};
}  // namespace

void Chores::release_later(std::vector<std::unique_ptr<DistributedLock>> locks, Duration window) {
  if (locks.empty()) return;
  auto pending = std::make_shared<Unreleased>();
  pending->locks = std::move(locks);
  const SteadyTime give_up = clock_.steady_now() + window;
  // Not `this`: the chore may outlive the Chores (the keeper goes last).
  keeper_.schedule(
      kFirstRetry,
      [&clock = clock_, metrics = metrics_, pending, give_up]() -> std::optional<Duration> {
        auto& locks = pending->locks;
        // The bounds are on the real clock: they keep the keeper thread's pass
        // short whatever the region's clock says.
        const auto pass_ends = std::chrono::steady_clock::now() + kPass;
        for (auto it = locks.begin();
             it != locks.end() && std::chrono::steady_clock::now() < pass_ends;) {
          const Request bounded{.deadline = std::chrono::steady_clock::now() + kAttempt};
          try {
            measured(metrics, BackendOp::release, "", 1, [&] { (*it)->release(bounded); });
            it = locks.erase(it);
          } catch (...) {
            ++it;
          }
        }
        if (locks.empty() || clock.steady_now() >= give_up) return std::nullopt;
        pending->pause = retry_pause(++pending->tries, pending->pause);
        return pending->pause;
      });
}

}  // namespace dogpile::detail
