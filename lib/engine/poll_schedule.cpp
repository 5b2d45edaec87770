#include "engine/poll_schedule.hpp"

#include <algorithm>
#include <random>

#include "base/fork.hpp"

namespace dogpile::detail {

Duration next_poll_in(const WaitPolicy& policy, Duration waited, TimePoint fleet_now,
                      const LockInfo& holder, Duration clock_error, double jitter) noexcept {
  auto scaled = [&](Duration d, double factor) {
    return std::chrono::duration_cast<Duration>(std::chrono::duration<double, Duration::period>(
        static_cast<double>(d.count()) * policy.growth * factor));
  };
  auto jittered = [&](Duration d) {
    return std::max(policy.first_poll, std::chrono::duration_cast<Duration>(
                                           std::chrono::duration<double, Duration::period>(
                                               static_cast<double>(d.count()) * jitter)));
  };
  const bool history = holder.expected > Duration::zero() && holder.started_at != TimePoint{};
  if (!history) {
    return jittered(std::clamp(scaled(waited, 1.0), policy.first_poll, policy.max_interval));
  }
  const TimePoint due = holder.started_at + holder.expected;
  const Duration until_due = due - fleet_now;
  const Duration window = holder.clock_error + clock_error + policy.max_poll;
  if (until_due > window) return until_due - window;  // asleep until the window opens
  if (until_due > Duration::zero()) {
    // Closing in on the due time: the pause shrinks with the distance.
    return jittered(std::clamp(scaled(until_due, 1.0), policy.max_poll, policy.max_interval));
  }
  // Late: the pause grows with the overrun — as it shrank, while the clocks'
  // errors may explain it, then twice as fast as with no history (the
  // creation is longer than the last one).
  const Duration overrun = -until_due;
  return jittered(std::clamp(scaled(overrun, overrun <= window ? 1.0 : 2.0), policy.max_poll,
                             policy.max_interval));
}

double poll_jitter() noexcept {
  thread_local std::uint64_t generation = ~std::uint64_t{0};
  thread_local std::minstd_rand generator;
  if (generation != fork_generation()) {  // first use in this thread, or a forked child
    generation = fork_generation();
    generator.seed(std::random_device{}());
  }
  std::uniform_real_distribution<double> factor(0.9, 1.1);
  return factor(generator);
}

}  // namespace dogpile::detail
