#include "poll_schedule.hpp"

#include <algorithm>
#include <random>

#include "fork.hpp"

namespace dogpile::detail {

Duration next_poll_in(const WaitPolicy& policy, Duration waited, TimePoint fleet_now,
                      const LockInfo& holder, double jitter) noexcept {
  auto clamp = [&](Duration d) { return std::clamp(d, policy.first_poll, policy.max_interval); };
  auto scaled = [&](Duration d) {
    return std::chrono::duration_cast<Duration>(std::chrono::duration<double, Duration::period>(
        static_cast<double>(d.count()) * policy.growth));
  };
  auto jittered = [&](Duration d) {
    return std::max(policy.first_poll,
                    std::chrono::duration_cast<Duration>(std::chrono::duration<double, Duration::period>(
                        static_cast<double>(d.count()) * jitter)));
  };
  const bool history = holder.expected > Duration::zero() && holder.started_at != TimePoint{};
  if (history) {
    const TimePoint due = holder.started_at + holder.expected;
    const Duration until_due = due - fleet_now;
    if (until_due > policy.max_poll) {
      // Sleep until just before it is due (no jitter: being late is the cost).
      return until_due - policy.max_poll;
    }
    // Late: the pause grows with the overrun, twice as fast as with no
    // history (the creation is already longer than the last one).
    const Duration overrun = std::max(Duration::zero(), -until_due);
    return jittered(std::clamp(scaled(overrun) * 2, policy.max_poll, policy.max_interval));
  }
  return jittered(clamp(scaled(waited)));
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
