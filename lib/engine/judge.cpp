// SPDX-License-Identifier: MIT
#include "engine/judge.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace dogpile::detail {
namespace {

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t fresh_seed() noexcept {
  std::uint64_t seed = 0;
  if (::getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed)) {
    seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return seed;
}

}  // namespace

Judge::Judge(const RegionOptions& options)
    : stale_grace_(options.stale_grace),
      beta_(options.early_recompute_beta),
      seeded_(options.random_seed != 0),
      random_state_(options.random_seed != 0 ? options.random_seed : fresh_seed()) {}

void Judge::reseed_after_fork() noexcept {
  if (!seeded_) random_state_.store(fresh_seed(), std::memory_order_relaxed);
}

Found Judge::judge(const EnvelopeView& envelope, TimePoint now, const Expiration& expiration,
                   const InvalidationTimes& inv, bool allow_early) noexcept {
  // Invalidations compare with when the creation started: a value whose
  // creator began before an invalidation may hold what it invalidated.
  const std::int64_t started =
      micros_since_epoch(envelope.created_at) - envelope.creation_duration.count();
  if (started < inv.hard) return Found::missing;
  const bool soft_invalidated = started < inv.soft;
  if (!expiration) return soft_invalidated ? Found::stale : Found::fresh;
  const Duration age = now - envelope.created_at;
  if (age > *expiration + stale_grace_) return Found::missing;
  if (age > *expiration || soft_invalidated) return Found::stale;
  if (age < -kFutureTolerance) return Found::stale;  // from the future: its age is unknown
  if (allow_early && beta_ && draw_early(*expiration - age, envelope.creation_duration)) {
    return Found::early;
  }
  return Found::fresh;
}

// XFetch: early when delta * beta * -ln(U) >= remaining, U uniform in (0, 1].
bool Judge::draw_early(Duration remaining, std::chrono::microseconds took) noexcept {
  if (took <= std::chrono::microseconds::zero()) return false;
  const double scale = std::chrono::duration<double>(took).count() * *beta_;
  const double left = std::chrono::duration<double>(remaining).count();
  if (left > scale * 40.0) return false;  // probability below e^-40: skip the draw
  const std::uint64_t bits =
      splitmix64(random_state_.fetch_add(0x9E3779B97F4A7C15ull, std::memory_order_relaxed));
  const double u = (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  return scale * -std::log(u) >= left;
}

}  // namespace dogpile::detail
