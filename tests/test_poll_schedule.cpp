// SPDX-License-Identifier: MIT
// When a waiter polls (internal): it sleeps until the value is due when the
// lock says so, polls at max_poll around that instant, keeps an even pace
// over the last creation's length when only that is known, and otherwise
// backs off with the time waited — so the polls of one creation are bounded.
#include <doctest/doctest.h>

#include "engine/poll_schedule.hpp"

using namespace std::chrono_literals;
using dogpile::Duration;
using dogpile::LockInfo;
using dogpile::TimePoint;
using dogpile::WaitPolicy;
using dogpile::detail::next_poll_in;

namespace {

const TimePoint kStart =
    TimePoint(std::chrono::sys_days(std::chrono::year(2026) / std::chrono::January / 1));

// Simulates one waiter from `started` (fleet time of the holder's start)
// until `done`: the number of polls, and how late the value (stored at
// `done`) is seen. Jitter 1 (its range is covered below).
struct Run {
  int polls = 0;
  Duration late{};
};
Run simulate(const WaitPolicy& policy, const LockInfo& holder, Duration creation,
             double jitter = 1.0) {
  Run run;
  Duration waited{};
  const TimePoint begin = holder.started_at == TimePoint{} ? kStart : holder.started_at;
  for (;;) {
    waited += next_poll_in(policy, waited, begin + waited, holder, 0s, jitter);
    ++run.polls;
    if (waited >= creation) {
      run.late = waited - creation;
      return run;
    }
  }
}

}  // namespace

TEST_SUITE("poll schedule") {
  TEST_CASE("with history: sleep until just before the value is due, then poll every max_poll") {
    WaitPolicy policy;
    const LockInfo holder{kStart, 5s};
    // 1 s into a 5 s creation: sleep 4 s less max_poll.
    CHECK(next_poll_in(policy, 1s, kStart + 1s, holder, 0s, 1.0) == 4s - policy.max_poll);
    // Less the clocks' errors, the holder's and this host's.
    auto unsure = holder;
    unsure.clock_error = 20ms;
    CHECK(next_poll_in(policy, 1s, kStart + 1s, unsure, 30ms, 1.0) == 4s - policy.max_poll - 50ms);
    // Within the window, the pause shrinks with the distance to the due time.
    CHECK(next_poll_in(policy, 1s, kStart + 5s - 48ms, unsure, 30ms, 1.0) == 8ms);
    // At the due time: max_poll (jittered, never under first_poll).
    CHECK(next_poll_in(policy, 5s, kStart + 5s, holder, 0s, 1.0) == policy.max_poll);
    CHECK(next_poll_in(policy, 5s, kStart + 5s, holder, 0s, 0.9) ==
          std::chrono::duration_cast<Duration>(policy.max_poll * 0.9));
    // Past it, the pause grows with the overrun: a sixth of it within the
    // clocks' errors, a third beyond them.
    CHECK(next_poll_in(policy, 5s, kStart + 5s + 4ms, holder, 0s, 1.0) == policy.max_poll);
    CHECK(next_poll_in(policy, 5s, kStart + 5s + 150ms, holder, 0s, 1.0) == 50ms);
    CHECK(next_poll_in(policy, 8s, kStart + 8s, holder, 0s, 1.0) == 1s);
    CHECK(next_poll_in(policy, 60s, kStart + 60s, holder, 0s, 1.0) == policy.max_interval);
  }

  TEST_CASE(
      "a 5 s creation that takes as long as the last: a handful of polls, seen within max_poll") {
    WaitPolicy policy;
    for (double jitter : {0.9, 1.0, 1.1}) {
      const Run run = simulate(policy, LockInfo{kStart, 5s}, 5s, jitter);
      MESSAGE("jitter " << jitter << ": " << run.polls << " polls, seen "
                        << std::chrono::duration<double, std::milli>(run.late).count()
                        << " ms late");
      CHECK(run.polls <= 20);
      CHECK(run.late <= std::chrono::duration_cast<Duration>(policy.max_poll * 1.1));
    }
    // Overrunning the history: 5 % late, and even 25 % (a second) late.
    for (Duration history : {Duration(4750ms), Duration(4s)}) {
      const Run run = simulate(
          policy, LockInfo{kStart, std::chrono::duration_cast<std::chrono::microseconds>(history)},
          5s, 0.9);
      MESSAGE("history " << std::chrono::duration<double>(history).count() << " s: " << run.polls
                         << " polls");
      CHECK(run.polls <= 22);
    }
  }

  TEST_CASE("no history: the pause grows with the time waited, and 5 s costs at most 60 polls") {
    WaitPolicy policy;
    const LockInfo none{};
    CHECK(next_poll_in(policy, 0s, kStart, none, 0s, 1.0) == policy.max_poll);
    CHECK(next_poll_in(policy, 200ms, kStart, none, 0s, 1.0) == 12ms);
    // Past the knee the fraction grows too: twice as large at twice the knee.
    CHECK(next_poll_in(policy, 400ms, kStart, none, 0s, 1.0) == 48ms);
    CHECK(next_poll_in(policy, 1h, kStart, none, 0s, 1.0) == policy.max_interval);
    for (double jitter : {0.9, 1.0, 1.1}) {
      const Run five = simulate(policy, none, 5s, jitter);
      const Run short_one = simulate(policy, none, 200ms, jitter);
      MESSAGE("jitter " << jitter << ": 5 s creation " << five.polls << " polls; 200 ms creation "
                        << short_one.polls << " polls, seen "
                        << std::chrono::duration<double, std::milli>(short_one.late).count()
                        << " ms late");
      CHECK(five.polls <= 60);
      // A 200 ms creation is seen within 12 ms (13.2 with the jitter).
      CHECK(short_one.late <= 200ms * policy.growth * 1.1 + 1ms);
    }
  }

  TEST_CASE("the length known, not the start: an even pace over it, at most 20 polls") {
    WaitPolicy policy;
    const LockInfo length_only{.expected = 5s};
    CHECK(next_poll_in(policy, 0s, kStart, length_only, 0s, 1.0) == Duration(5s) / 16);
    CHECK(next_poll_in(policy, 4s, kStart, length_only, 0s, 1.0) == Duration(5s) / 16);
    // Past the length: the same pace, then a third of the overrun.
    CHECK(next_poll_in(policy, 5s + 150ms, kStart, length_only, 0s, 1.0) == Duration(5s) / 16);
    CHECK(next_poll_in(policy, 7s, kStart, length_only, 0s, 1.0) == Duration(2s) / 3);
    // The waiter came at the holder's start, or 3 s after it; or the
    // creation overran by a second.
    for (double jitter : {0.9, 1.0, 1.1}) {
      for (Duration remaining : {Duration(5s), Duration(2s), Duration(6s)}) {
        const Run run = simulate(policy, length_only, remaining, jitter);
        MESSAGE("jitter " << jitter << ", " << std::chrono::duration<double>(remaining).count()
                          << " s to go: " << run.polls << " polls, seen "
                          << std::chrono::duration<double, std::milli>(run.late).count()
                          << " ms late");
        CHECK(run.polls <= (remaining <= 5s ? 20 : 24));
        if (remaining <= 5s) CHECK(run.late <= Duration(5s) / 16 * 1.1);
      }
    }
    // A short creation: the pace never under max_poll.
    CHECK(next_poll_in(policy, 0s, kStart, LockInfo{.expected = 20ms}, 0s, 1.0) == policy.max_poll);
  }
}
