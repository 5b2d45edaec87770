// SPDX-License-Identifier: MIT
// dogpile/detail/loop.hpp — what an event loop offers a call that waits
// without a thread (docs/async.md). The asio binding (dogpile/asio.hpp)
// implements it on an executor; tests implement it on a queue and a
// ManualClock. Not for direct use.
#pragma once

#include <functional>
#include <memory>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

/// A socket watched on an event loop: a transport's connection that the
/// loop's own thread reads and writes (docs/async.md). Made by
/// Loop::watch; it may outlive the call that made it, not the loop.
class Watch {
 public:
  virtual ~Watch() = default;  // stops watching; the socket stays open
  /// Calls fn(true) on the loop once the socket is readable (`write`:
  /// writable), or fn(false) if the watch is cancelled or the loop is
  /// going away. One wait of each kind at a time.
  virtual void wait(bool write, std::function<void(bool)> fn) = 0;
  /// Calls fn on the loop after `delay` (one timer, set again by each call;
  /// nothing if the loop is going away first).
  virtual void after(Duration delay, std::function<void()> fn) = 0;
  /// Ends the timer (its fn never runs).
  virtual void stop_timer() = 0;
  /// Ends the waits (their fn(false)) and the timer. On the loop only.
  virtual void cancel() = 0;
  /// Runs fn on the loop, from any thread (never inside this call).
  virtual void post(std::function<void()> fn) = 0;
  /// False once the loop is going away: the watch must not be used.
  [[nodiscard]] virtual bool alive() const = 0;
};

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
  /// The event loop itself (one per io_context): calls on the same loop
  /// share its watched sockets. Null: this loop watches no socket.
  [[nodiscard]] virtual const void* context() const { return nullptr; }
  /// Watches socket `fd` on the loop; null if this loop cannot.
  [[nodiscard]] virtual std::unique_ptr<Watch> watch(int /*fd*/) { return nullptr; }
  /// Where what is posted here runs: loops that give the same (one
  /// executor) have a herd's wakes in one post. This loop alone by default.
  [[nodiscard]] virtual const void* runs_on() const { return this; }
};

}  // namespace dogpile::detail
