// SPDX-License-Identifier: MIT
// When a caller waiting on another process's creation polls next (internal).
//
// A pure function of the wait policy, how long the caller has waited, and
// what the holder's lock says. With history (when the holder started, how
// long the last creation took) the caller sleeps until the value is due and
// then polls every max_poll, backing off again once the creation overruns;
// with the length alone (the meta protocol's leases), it polls at an even
// pace over that length; with none, the pause grows with the time waited,
// faster past WaitPolicy::growth_knee. Either way the polls of one creation
// are bounded: a few for a creation as long as the last one, about 16 with
// the length alone, about 52 for 5 s with no history.
#pragma once

#include <chrono>
#include <cstdint>

#include "dogpile/backend.hpp"
#include "dogpile/options.hpp"

namespace dogpile::detail {

/// The pause before the next poll. `waited`: since the wait began;
/// `fleet_now`: now on the fleet clock (the clock of holder.started_at);
/// `clock_error`: how far this host's fleet clock may be off; `jitter` in
/// [0.9, 1.1] spreads the pollers of many processes. With history, the value
/// is due at started_at + expected, give or take both clocks' errors: the
/// waiter sleeps until that window opens, then polls more often the nearer
/// it is to the due time (every max_poll at it), and less often as the
/// creation overruns. A holder with `expected` but no `started_at`: the
/// length is known, not the start.
[[nodiscard]] Duration next_poll_in(const WaitPolicy& policy, Duration waited, TimePoint fleet_now,
                                    const LockInfo& holder, Duration clock_error,
                                    double jitter) noexcept;

/// A jitter factor in [0.9, 1.1] from a per-thread generator (reseeded in a
/// forked child).
[[nodiscard]] double poll_jitter() noexcept;

}  // namespace dogpile::detail
