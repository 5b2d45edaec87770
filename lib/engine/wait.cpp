// SPDX-License-Identifier: MIT
// Waits: polling a lease held in another process, following this
// process's leader.
#include "engine/engine.hpp"

#include <algorithm>
#include <utility>

#include "engine/io.hpp"
#include "engine/parts.hpp"
#include "engine/poll_schedule.hpp"

namespace dogpile::detail {

// ---------------------------------------------------------------------------
// wait: for a lease held in another process, and for this process's leader

// Polls the slots whose lease another process holds, one request a poll
// for all that are due, on the schedule their locks allow, until each has a
// value, is created here (its lease freed), or the wait runs out.
Task<> Engine::wait_for_others(Context& ctx, std::span<Slot* const> remote) {
  if (remote.empty()) co_return;
  Io& io = *ctx.io;
  for (std::size_t i = 0; i < remote.size(); ++i) detail::Counters::add(counters_.lock_waits);
  const SteadyTime started = clock_.steady_now();
  const SteadyTime give_up_at =
      options_.wait.max_wait
          ? started + std::chrono::duration_cast<SteadyTime::duration>(*options_.wait.max_wait)
          : SteadyTime::max();
  const SteadyTime limit = std::min(ctx.deadline, give_up_at);
  struct Waiting {
    Slot* slot;
    SteadyTime next;
  };
  std::vector<Waiting> waiting;
  auto schedule = [&](Waiting& w, SteadyTime now) {
    // A lease that does not say what its holder expects (memcached's meta
    // leases): the last creation's length, from the envelope read, if any.
    LockInfo holder = w.slot->lease.holder;
    if (holder.expected <= Duration::zero() && w.slot->history > Duration::zero()) {
      holder = LockInfo{.expected = w.slot->history};
    }
    const auto pause = detail::next_poll_in(options_.wait, now - started, fleet_.now(), holder,
                                            fleet_.error(), detail::poll_jitter());
    w.next = now + std::chrono::duration_cast<SteadyTime::duration>(pause);
  };
  for (Slot* s : remote) schedule(waiting.emplace_back(Waiting{s, started}), started);
  while (!waiting.empty()) {
    SteadyTime next = SteadyTime::max();
    for (const auto& w : waiting) next = std::min(next, w.next);
    bool woke = false;
    if (next <= limit) woke = co_await io.sleep_until(next, ctx.stop);
    if (!woke) {
      if (next > limit) (void)co_await io.sleep_until(limit, ctx.stop);
      const auto reason = ctx.stop.stop_requested() ? WaitTimeout::Reason::cancelled
                          : limit == give_up_at     ? WaitTimeout::Reason::max_wait
                                                    : WaitTimeout::Reason::deadline;
      std::vector<Slot*> late;
      for (const auto& w : waiting) late.push_back(w.slot);
      co_await give_up(ctx, late, reason);
      co_return;
    }
    const SteadyTime now = clock_.steady_now();
    std::vector<Slot*> due;
    for (const auto& w : waiting) {
      if (w.next <= now) due.push_back(w.slot);
    }
    co_await poll(ctx, due);
    std::erase_if(waiting, [](const Waiting& w) { return w.slot->served != Served::none; });
    const SteadyTime after = clock_.steady_now();
    for (auto& w : waiting) {
      if (w.next <= now) schedule(w, after);
    }
  }
}

// One poll of `due` (value and lease together): a value ends the wait; a
// lease that was freed is claimed, and the value made here.
Task<> Engine::poll(Context& ctx, std::span<Slot* const> due) {
  Io& io = *ctx.io;
  bool polled = false;
  co_await io.request([&] {
    polled = with_leases(BackendOp::poll, "poll", due, [&](std::span<KeyRead> keys) {
      backend_->poll(keys, ctx.read_request, ctx.request);
    });
  });
  if (!polled) {
    if (ctx.stop.stop_requested() || clock_.steady_now() >= ctx.deadline) {
      // The call's own deadline (or stop) cut the poll short: the wait ends
      // as it would have without the request, never in a second creator.
      co_await give_up(ctx, due,
                       ctx.stop.stop_requested() ? WaitTimeout::Reason::cancelled
                                                 : WaitTimeout::Reason::deadline);
      co_return;
    }
    // The server went away while we waited: create here, without the lock.
    for (Slot* s : due) s->backing = Backing::degraded;
    co_await create_for_call(ctx, due);
    co_return;
  }
  std::vector<Slot*> takeover, to_claim;
  for (Slot* s : due) {
    if (s->read_item) {
      Item item = std::move(*s->read_item);
      s->read_item.reset();
      const Found found = examine_item(ctx, *s, item, true);
      if (detail::usable(found)) {
        s->found = found;
        s->at_hand = std::make_shared<const Item>(std::move(item));
        s->value_is_at_hand = true;
        note_read(ctx, s->key, s->at_hand);
        s->lead->publish(s->at_hand);
        s->served = found == Found::stale ? Served::stale : Served::waited;
        continue;
      }
    }
    switch (s->lease.state) {
      case LeaseState::won:  // a backend that can only tell by trying took it
        takeover.push_back(s);
        break;
      case LeaseState::held:
        break;
      default:  // free: its holder finished without storing, or died
        to_claim.push_back(s);
        break;
    }
  }
  // Free: the holder finished without storing, or died. Won: take over;
  // failed: create here, degraded; held: wait on.
  if (to_claim.empty() && takeover.empty()) co_return;
  std::vector<Slot*> won;
  co_await io.request([&] {
    claim(ctx, to_claim);
    for (Slot* s : to_claim) {
      if (s->backing == Backing::degraded || s->lease.state == LeaseState::won) {
        takeover.push_back(s);
      }
    }
    for (Slot* s : takeover) {
      s->confirmed = false;
      if (s->backing != Backing::degraded) won.push_back(s);
    }
    confirm(ctx, won);
  });
  std::erase_if(takeover, [](const Slot* s) { return s->served != Served::none; });
  if (!takeover.empty()) co_await create_for_call(ctx, takeover);
}

// Out of time: never a second creator, unless the policy asks for one after
// max_wait. This process's callers waiting on these slots start over.
Task<> Engine::give_up(Context& ctx, std::span<Slot* const> late, WaitTimeout::Reason reason) {
  detail::Counters::add(counters_.wait_timeouts, late.size());
  if (reason == WaitTimeout::Reason::max_wait && options_.wait.create_after_max_wait) {
    reporter_.report(ErrorKind::lock, "wait", late.front()->user_key,
                     fmt::format("gave up waiting for the lock holder after {}; creating here",
                                 format_duration(*options_.wait.max_wait)));
    for (Slot* s : late) s->backing = Backing::degraded;
    co_await create_for_call(ctx, late);
    co_return;
  }
  for (Slot* s : late) s->lead->abandon();
  throw WaitTimeout(reason, late.front()->user_key);
}

Task<> Engine::follow(Context& ctx, std::span<Slot* const> followers, std::vector<Slot*>& restart) {
  const SteadyTime limit = follow_limit(ctx);
  for (Slot* s : followers) {
    const auto result = co_await ctx.io->follow(s->follow, limit, ctx.stop);
    s->follow.reset();
    if (!settle_follow(ctx, *s, result, limit)) restart.push_back(s);
  }
}

SteadyTime Engine::follow_limit(const Context& ctx) const {
  return options_.wait.max_wait
             ? std::min(ctx.deadline,
                        clock_.steady_now() + std::chrono::duration_cast<SteadyTime::duration>(
                                                  *options_.wait.max_wait))
             : ctx.deadline;
}

bool Engine::settle_follow(Context& ctx, Slot& slot, const std::optional<Flight::Result>& result,
                           SteadyTime limit) {
  if (!result) {
    detail::Counters::add(counters_.wait_timeouts);
    throw WaitTimeout(ctx.stop.stop_requested()
                          ? WaitTimeout::Reason::cancelled
                          : (limit == ctx.deadline ? WaitTimeout::Reason::deadline
                                                   : WaitTimeout::Reason::max_wait),
                      slot.user_key);
  }
  if (result->error) std::rethrow_exception(result->error);
  if (result->item) {
    const Found found = examine_item(ctx, slot, *result->item, false);
    if (detail::usable(found)) {
      slot.found = found;
      slot.at_hand = result->item;
      slot.value_is_at_hand = true;
      slot.served = found == Found::stale ? Served::stale : Served::waited;
      return true;
    }
  }
  return false;  // the leader gave up: start over
}

}  // namespace dogpile::detail
