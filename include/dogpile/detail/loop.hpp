// SPDX-License-Identifier: MIT
// dogpile/detail/loop.hpp — what an event loop offers a call that waits
// without a thread (docs/async.md). The asio binding (dogpile/asio.hpp)
// implements it on an executor; tests implement it on a queue and a
// ManualClock. Not for direct use.
#pragma once

#include <functional>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

class Loop {
 public:
  virtual ~Loop() = default;
  /// Runs `fn` soon, on the loop; never inside this call.
  virtual void post(std::function<void()> fn) = 0;
  /// Runs `fn` on the loop once the region's clock reads `at`, which is
  /// `delay` from now (a loop timing by the real clock waits `delay`).
  /// Returns what cancels it (then `fn` never runs; any thread may call it,
  /// once, or never): a finished wait leaves no timer behind.
  virtual std::function<void()> post_at(SteadyTime at, Duration delay,
                                        std::function<void()> fn) = 0;
  /// Runs `fn`, backend requests that may block, off the loop (then posts
  /// nothing itself: `fn` ends by posting what follows).
  virtual void run_blocking(std::function<void()> fn) = 0;
  /// Runs `fn`, the creator, where the caller asked: never on the loop's
  /// own thread unless the caller named it.
  virtual void run_creator(std::function<void()> fn) = 0;
  /// True if the backend never blocks (the in-process one): its requests
  /// run on the loop, in place.
  [[nodiscard]] virtual bool requests_in_place() const = 0;
};

}  // namespace dogpile::detail
