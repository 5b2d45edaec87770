// SPDX-License-Identifier: MIT
// Judging a stored value (internal): fresh, chosen for early recomputation,
// stale, or missing — a pure function of the envelope, the time (on the fleet
// clock), the expiration and the invalidations, but for XFetch's random draw.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "dogpile/options.hpp"
#include "engine/invalidation.hpp"
#include "format/envelope.hpp"

namespace dogpile::detail {

/// What the backend holds for a key, judged at one instant.
enum class Found : std::uint8_t {
  fresh,    // younger than the expiration
  early,    // fresh, but chosen for early recomputation (XFetch)
  stale,    // expired (or soft-invalidated), within the stale grace
  missing,  // nothing usable: absent, too old, hard-invalidated, a tombstone, or unreadable
  error,    // the backend failed
};

inline bool usable(Found f) noexcept {
  return f == Found::fresh || f == Found::early || f == Found::stale;
}

class Judge {
 public:
  explicit Judge(const RegionOptions& options);

  /// A value created more than this ahead of the judging clock is not
  /// trusted to be fresh (its writer's clock was not reconciled): stale.
  static constexpr Duration kFutureTolerance = std::chrono::seconds(2);

  /// `envelope` (a value, not a tombstone) read at `now` (fleet clock).
  /// `allow_early`: XFetch may choose it (not on plain reads).
  [[nodiscard]] Found judge(const EnvelopeView& envelope, TimePoint now,
                            const Expiration& expiration, const InvalidationTimes& invalidations,
                            bool allow_early) noexcept;

  /// In a forked child: draws differ from the parent's (unless seeded).
  void reseed_after_fork() noexcept;

 private:
  bool draw_early(Duration remaining, std::chrono::microseconds took) noexcept;

  const Duration stale_grace_;
  const std::optional<double> beta_;
  const bool seeded_;
  std::atomic<std::uint64_t> random_state_;  // splitmix64 counter
};

}  // namespace dogpile::detail
