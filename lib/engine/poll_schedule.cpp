// SPDX-License-Identifier: MIT
#include "engine/poll_schedule.hpp"

#include <algorithm>
#include <random>

#include "base/fork.hpp"

namespace dogpile::detail {

namespace {

std::chrono::duration<double, Duration::period> as_double(Duration d) noexcept { return d; }

Duration from_double(double count) noexcept {
  return std::chrono::duration_cast<Duration>(
      std::chrono::duration<double, Duration::period>(count));
}

// `fraction` of `d`, between max_poll and max_interval (clamped before it
// is converted: a long wait times a growing fraction can pass any integer).
Duration part(const WaitPolicy& policy, Duration d, double fraction) noexcept {
  const double count =
      std::clamp(as_double(d).count() * fraction, as_double(policy.max_poll).count(),
                 as_double(policy.max_interval).count());
  return std::clamp(from_double(count), policy.max_poll, policy.max_interval);
}

// The pause after waiting `d` with nothing to go on: a fraction of it,
// which itself grows with d past the knee.
Duration backoff(const WaitPolicy& policy, Duration d) noexcept {
  return part(policy, d,
              policy.growth * std::max(1.0, as_double(d) / as_double(policy.growth_knee)));
}

}  // namespace

Duration next_poll_in(const WaitPolicy& policy, Duration waited, TimePoint fleet_now,
                      const LockInfo& holder, Duration clock_error, double jitter) noexcept {
  auto jittered = [&](Duration d) {
    return std::max(policy.first_poll, from_double(as_double(d).count() * jitter));
  };
  if (holder.expected <= Duration::zero()) return jittered(backoff(policy, waited));
  if (holder.started_at == TimePoint{}) {
    // How long it takes is known, not when it began (at most when this
    // waiter came): an even pace over that length, then slower with the
    // overrun.
    const Duration expected = holder.expected;
    const Duration pace = part(policy, expected, 1.0 / policy.polls_per_creation);
    if (waited < expected) return jittered(pace);
    return jittered(std::max(pace, part(policy, waited - expected, 1.0 / 3)));
  }
  const TimePoint due = holder.started_at + holder.expected;
  const Duration until_due = due - fleet_now;
  const Duration window = holder.clock_error + clock_error + policy.max_poll;
  if (until_due > window) return until_due - window;  // asleep until the window opens
  if (until_due > Duration::zero()) {
    // Closing in on the due time: the pause is a sixth of the distance.
    return jittered(part(policy, until_due, 1.0 / 6));
  }
  // Late: the pause grows with the overrun, as it shrank while the clocks'
  // errors may explain it, then twice as fast (the creation is longer than
  // the last one).
  const Duration overrun = -until_due;
  return jittered(part(policy, overrun, overrun <= window ? 1.0 / 6 : 1.0 / 3));
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
