// SPDX-License-Identifier: MIT
// The dogpile step, written once (docs/engine.md):
//
//   read -> judge -> flight -> lease -> confirm -> create -> store -> release
//        -> publish -> wait -> account
//
// A call is a batch of slots, one per distinct key; each step does its I/O
// for the whole batch. get_or_create is a batch of one (on the stack, with a
// fast path for a fresh hit), get_or_create_multi and cached_multi a batch of
// many, and a background job runs the create..publish part for the slots a
// caller handed it. This file: run, flight, lease, confirm, account.
#include "engine/engine.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include "engine/async_io.hpp"
#include "engine/io.hpp"
#include "engine/parts.hpp"
#include "format/keys.hpp"

namespace dogpile::detail {

// ---------------------------------------------------------------------------
// run: the whole step for one call

Outcome Engine::run(const Call& call) {
  // Every call is timed, and recorded by how it ended (an exception: failed).
  struct Timed {
    detail::Metrics& metrics;
    const Call& call;
    SteadyTime started;
    std::optional<Outcome> outcome;  // none: it threw
    ~Timed() {
      metrics.call(outcome, call.keys.empty() ? std::string_view() : call.keys.front(),
                   call.keys.size(), metrics.now() - started);
    }
  } timed{metrics_, call, metrics_.now(), std::nullopt};
  SyncIo io(clock_);
  Context ctx;
  Slot slot;
  if (auto local = begin(ctx, slot, call, timed.started, io)) {
    timed.outcome = *local;
    return *local;
  }
  const Outcome outcome = run_keys(ctx, slot).run_here();
  timed.outcome = outcome;
  return outcome;
}

// ---------------------------------------------------------------------------
// start: the same call, on a loop, no thread held while it waits

struct Engine::Started {
  Started(Engine& e, const Clock& clock, Loop& loop) : engine(&e), io(clock, loop) {}
  Engine* engine;
  AsyncIo io;
  Context ctx;
  Slot slot;
  const Call* call = nullptr;
  SteadyTime started;
  std::function<void(std::exception_ptr, Outcome, bool)> done;
  // Following this process's leader (one key): by when, and what came.
  SteadyTime limit;
  std::optional<Flight::Result> followed;
};

// A coroutine nobody awaits: it runs from its start and frees itself.
struct Engine::Detached {
  struct promise_type {
    Detached get_return_object() const noexcept { return {}; }
    std::suspend_never initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }  // drive() catches all
  };
};

void Engine::start(const Call& call, Loop& loop,
                   std::function<void(std::exception_ptr, Outcome, bool)> done) {
  auto s = std::make_unique<Started>(*this, clock_, loop);
  s->call = &call;
  s->started = metrics_.now();
  s->done = std::move(done);
  std::optional<Outcome> local;
  try {
    local = begin(s->ctx, s->slot, call, s->started, s->io);
  } catch (...) {
    finish(*s, std::current_exception(), Outcome::created);
    return;
  }
  if (local) {
    finish(*s, nullptr, *local);
    return;
  }
  drive(std::move(s));
}

Engine::Detached Engine::drive(std::unique_ptr<Started> s, bool again) {
  std::exception_ptr error;
  Outcome outcome = Outcome::created;
  try {
    outcome = co_await run_keys(s->ctx, s->slot, again);
  } catch (...) {
    error = std::current_exception();
  }
  if (!error && s->slot.follow) {
    follow_leader(std::move(s));
    co_return;
  }
  finish(*s, error, outcome);
}

// A one-key call following this process's leader waits with no frame: its
// Started alone, and the flight's continuation (docs/async.md).
void Engine::follow_leader(std::unique_ptr<Started> s) {
  Started& call = *s;
  call.limit = follow_limit(call.ctx);
  // Owned by the continuation from here (it runs once, on the loop).
  (void)s.release();
  call.io.follow_then(call.slot.follow, call.limit, call.ctx.stop, call.followed,
                      &Engine::leader_done, &call);
}

void Engine::leader_done(void* started) {
  std::unique_ptr<Started> s(static_cast<Started*>(started));
  Engine& engine = *s->engine;
  Slot& slot = s->slot;
  slot.follow.reset();
  bool served = false;
  // A turn of the loop of its own: the caller may be completed in place
  // (what its completion throws leaves by the loop, `s` freed on the way).
  try {
    served = engine.settle_follow(s->ctx, slot, s->followed, s->limit);
  } catch (...) {
    engine.finish(*s, std::current_exception(), Outcome::created, true);
    return;
  }
  s->followed.reset();
  if (served) {
    engine.finish(*s, nullptr, engine.account(slot), true);
    return;
  }
  engine.drive(std::move(s), true);  // the leader gave up: start over
}

void Engine::finish(Started& s, std::exception_ptr error, Outcome outcome, bool own_turn) {
  const Call& call = *s.call;
  metrics_.call(error ? std::nullopt : std::optional<Outcome>(outcome),
                call.keys.empty() ? std::string_view() : call.keys.front(), call.keys.size(),
                metrics_.now() - s.started);
  const auto done = std::move(s.done);
  done(error, outcome, own_turn);  // may free the call
}

std::optional<Outcome> Engine::begin(Context& ctx, Slot& slot, const Call& call, SteadyTime started,
                                     Io& io) {
  ctx.io = &io;
  ctx.call = &call;
  ctx.decoder = &call.decode;
  ctx.expiration = call.options.expiration ? *call.options.expiration : options_.expiration;
  ctx.ttl = lifetimes_.item(ctx.expiration);
  const auto deadline =
      call.options.deadline
          ? std::optional<Deadline>(*call.options.deadline)
          : (options_.deadline ? std::optional<Deadline>(*options_.deadline) : std::nullopt);
  if (deadline) ctx.deadline = deadline->on(clock_);
  ctx.stop = call.options.stop;
  ctx.read_request.claim_if_missing = true;
  if (ctx.expiration) {
    ctx.read_request.claim_if_ttl_below = lifetimes_.refresh_below();
  }
  ctx.read_request.ttl = lifetimes_.lease();
  // Backends bound each request by the deadline, on the real steady clock.
  if (deadline) {
    ctx.request.deadline = std::chrono::steady_clock::now() + (ctx.deadline - clock_.steady_now());
  }
  ctx.request.stop = ctx.stop;
  // One reading of the clock for what comes before any request.
  // (Unless that made a request: then the clock is read again.)
  if (!prepare(started)) ctx.started = started;
  if (call.keys.size() != 1) return std::nullopt;
  aim(slot, call.keys[0]);
  if (local_.enabled() && serve_local(ctx, slot)) return account(slot);  // no request
  return std::nullopt;
}

Task<Outcome> Engine::run_keys(Context& ctx, Slot& slot, bool again) {
  const Call& call = *ctx.call;
  if (call.keys.size() == 1) {
    if (!again) {
      if (ctx.io->synchronous()) {
        read_one(ctx, slot);
      } else {
        co_await read_one_on_loop(ctx, slot);
      }
      if (slot.found == Found::fresh && !slot.lease.lock) {  // the hot path: one request
        detail::Counters::add(counters_.hits);
        co_return Outcome::fresh;
      }
    }
    // The step's rounds for one key, here. An asynchronous caller that
    // must follow this process's leader returns (slot.follow set): its
    // driver waits on the flight, holding no frame.
    Slot* const one = &slot;
    for (bool reread = again;; reread = true) {
      {
        std::vector<Slot*> followers;
        co_await lead(ctx, std::span<Slot* const>(&one, 1), reread, followers);
      }
      if (!slot.follow) break;
      if (!ctx.io->synchronous()) co_return Outcome::waited;
      const SteadyTime limit = follow_limit(ctx);
      const bool served =
          settle_follow(ctx, slot, co_await ctx.io->follow(slot.follow, limit, ctx.stop), limit);
      slot.follow.reset();
      if (served) break;
    }
    co_return account(slot);
  }
  // (Apart: a one-key call's frame, alive while it waits, holds none of this.)
  co_return co_await run_many(ctx);
}

Task<Outcome> Engine::run_many(Context& ctx) {
  const Call& call = *ctx.call;
  // Many keys: one slot per distinct backend key, in key order (locks are
  // taken in that order, so two calls over overlapping keys cannot deadlock).
  std::vector<std::pair<std::string, std::size_t>> mapped;
  mapped.reserve(call.keys.size());
  for (std::size_t i = 0; i < call.keys.size(); ++i) {
    mapped.emplace_back(detail::map_key(options_.key_prefix, call.keys[i]), i);
  }
  std::stable_sort(mapped.begin(), mapped.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Slot> slots;
  slots.reserve(mapped.size());
  for (auto& [key, index] : mapped) {
    if (!slots.empty() && slots.back().key == key) {
      slots.back().copies.push_back(index);
      continue;
    }
    Slot& s = slots.emplace_back();
    s.user_key = call.keys[index];
    s.key = std::move(key);
    s.check = key_check(s.key);
    s.index = index;
  }
  std::vector<Slot*> all;
  all.reserve(slots.size());
  for (auto& s : slots) {
    // Many keys: one read for those not held is cheaper than a check each.
    if (local_.enabled() && serve_local(ctx, s, false)) continue;
    all.push_back(&s);
  }
  if (!all.empty()) {
    co_await ctx.io->request([&] { read(ctx, all); });
    co_await step(ctx, all);
  }
  auto costliest = Outcome::fresh;  // the call counts as its costliest key
  for (auto& s : slots) {
    costliest = std::max(costliest, account(s));
    if (s.copies.empty()) continue;
    // Keys given more than once share one value.
    std::string_view payload;
    Scratch scratch;
    const Item* item = s.made ? s.made.get() : s.at_hand.get();
    if (item != nullptr) {
      if (auto env = detail::decode_envelope(item->data, item->flags, s.check).envelope) {
        payload = payload_of(*env, scratch.get()).value_or(std::string_view());
      }
    }
    for (auto c : s.copies) call.decode(c, payload);
  }
  co_return costliest;
}

// The step for many slots whose first read is done (one key's rounds are
// run_keys' own). A follower waits in `follow` with the frames of `step`
// alone: what leading takes is `lead`'s, freed by then.
Task<> Engine::step(Context& ctx, std::vector<Slot*> pending) {
  bool first = true;
  while (!pending.empty()) {
    std::vector<Slot*> followers, restart;
    co_await lead(ctx, pending, !first, followers);
    first = false;
    if (!followers.empty()) co_await follow(ctx, followers, restart);
    pending = std::move(restart);
  }
}

// One round of the step for `pending` (read again first if `reread`): the
// flights joined, the leases taken, what this caller leads created, the
// waits on other processes' creations; the slots that follow a leader of
// this process are left in `followers`.
Task<> Engine::lead(Context& ctx, std::span<Slot* const> pending, bool reread,
                    std::vector<Slot*>& followers) {
  Io& io = *ctx.io;
  if (reread) {  // slots starting over: their flight was given up
    co_await io.request([&] {
      if (pending.size() == 1) {
        read_one(ctx, *pending.front());
      } else {
        read(ctx, pending);
      }
    });
  }
  std::vector<Slot*> leaders, won, remote;
  join_flights(ctx, pending, leaders, followers);
  // A lease granted in the read to a caller that will not create (the
  // value was fresh, or another caller here leads): given back at once.
  std::vector<Slot*> needless;
  for (Slot* s : pending) {
    if (s->lease.lock && !s->lead) needless.push_back(s);
  }
  if (!needless.empty()) co_await io.request([&] { release(needless, ctx.request); });
  if (!leaders.empty()) {
    co_await io.request([&] {
      take_leases(ctx, leaders, won, remote);
      confirm(ctx, won);
    });
  }
  hand_to_background(ctx, won);
  // Create what this caller holds the lease for, and what it must create
  // without one (the backend is failing).
  std::vector<Slot*> to_create;
  for (Slot* s : leaders) {
    if (s->served == Served::none && (s->lease.lock || s->backing == Backing::degraded))
      to_create.push_back(s);
  }
  if (!to_create.empty()) co_await create_for_call(ctx, to_create);
  if (!remote.empty()) co_await wait_for_others(ctx, remote);
}

// ---------------------------------------------------------------------------
// flight: this process's callers of a key share one leader

void Engine::join_flights(Context&, std::span<Slot* const> slots, std::vector<Slot*>& leaders,
                          std::vector<Slot*>& followers) {
  for (Slot* s : slots) {
    switch (s->found) {
      case Found::fresh:
        s->served = Served::fresh;
        break;
      case Found::early:
      case Found::stale:
        // Someone in this process is regenerating it already: serve what we have.
        if (auto lead = flights_.try_lead(s->key)) {
          s->lead.emplace(std::move(*lead));
          if (s->found == Found::early) detail::Counters::add(counters_.early_recomputes);
          leaders.push_back(s);
        } else {
          s->served = s->found == Found::early ? Served::fresh : Served::stale;
        }
        break;
      case Found::missing:
      case Found::error: {
        if (!s->counted_miss) {
          detail::Counters::add(counters_.misses);
          s->counted_miss = true;
        }
        auto [flight, lead] = flights_.join(s->key);
        if (lead) {
          s->lead.emplace(std::move(*lead));
          leaders.push_back(s);
        } else {
          s->follow = std::move(flight);
          detail::Counters::add(counters_.lock_waits);
          followers.push_back(s);
        }
        break;
      }
    }
  }
}

// Serves the value this caller read (stale, or fresh but chosen for early
// recomputation) and hands it to the flight's followers.
void Engine::serve_at_hand(Context& ctx, Slot& slot) {
  redecode_at_hand(ctx, slot);
  slot.lead->publish(slot.at_hand);
  slot.served = slot.found == Found::early ? Served::fresh : Served::stale;
}

void Engine::redecode_at_hand(Context& ctx, Slot& slot) {
  if (slot.value_is_at_hand || ctx.decoder == nullptr || !slot.at_hand) return;
  const auto env = detail::decode_envelope(slot.at_hand->data, slot.at_hand->flags, slot.check);
  Scratch scratch;
  if (env.envelope) {
    if (auto payload = payload_of(*env.envelope, scratch.get())) ctx.decode(slot.index, *payload);
  }
  slot.value_is_at_hand = true;
}

// ---------------------------------------------------------------------------
// lease: one caller in the fleet regenerates

void Engine::take_leases(Context& ctx, std::span<Slot* const> leaders, std::vector<Slot*>& won,
                         std::vector<Slot*>& remote) {
  const SteadyTime now = clock_.steady_now();
  auto held_elsewhere = [&](Slot& s) {
    if (s.has_value()) {
      // Served stale; the process's next stale callers will not ask again
      // until the holder's creation is likely done.
      const Duration hold = lifetimes_.held_elsewhere(s.took);
      held_.remember(s.key, now + std::chrono::duration_cast<SteadyTime::duration>(hold));
      serve_at_hand(ctx, s);
    } else {
      remote.push_back(&s);
    }
  };
  std::vector<Slot*> to_claim;
  for (Slot* s : leaders) {
    if (s->found == Found::error || s->backing == Backing::read_failed) {
      // The read failed: the server is likely down, skip the lock. As a
      // lease's confirm reads again, look again at what this process kept:
      // another caller may have kept a new value between this caller's look
      // and its lead. That value is served, not made again.
      const Found first_found = s->found;
      auto first_at_hand = s->at_hand;
      read_failed(ctx, *s, false);
      if (s->found == Found::fresh) {
        if (!detail::usable(first_found)) detail::Counters::add(counters_.kept_served);
        s->lead->publish(s->at_hand);
        s->served = Served::fresh;
        continue;
      }
      if (!s->has_value() && first_at_hand && detail::usable(first_found)) {
        // Evicted meanwhile: the stale value first found is still at hand.
        s->found = first_found;
        s->at_hand = std::move(first_at_hand);
        s->value_is_at_hand = false;
        redecode_at_hand(ctx, *s);
      }
      s->backing = Backing::degraded;
    } else if (s->lease.state == LeaseState::won) {
      won.push_back(s);  // granted in the read
    } else if (s->lease.state == LeaseState::held) {
      held_elsewhere(*s);
    } else if (s->has_value() && held_.held(s->key, now)) {
      serve_at_hand(ctx, *s);
    } else {
      to_claim.push_back(s);
    }
  }
  claim(ctx, to_claim);
  for (Slot* s : to_claim) {
    if (s->backing == Backing::degraded) continue;
    if (s->lease.state == LeaseState::won) {
      held_.forget(s->key);
      won.push_back(s);
    } else {
      held_elsewhere(*s);
    }
  }
}

// Claims the slots' leases (classic: one `add` of the lock item per key, a
// pipeline per server; the item tells waiters when this creation started,
// how long the last one took, and how far this host's clock may be off):
// the slots whose last creation took as long in one request. A slot whose
// lease the backend could not give is degraded.
void Engine::claim(const Context& ctx, std::span<Slot* const> slots) {
  std::vector<Slot*> sorted(slots.begin(), slots.end());
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Slot* a, const Slot* b) { return a->history < b->history; });
  const TimePoint started = fleet_.now();
  for (std::size_t first = 0; first < sorted.size();) {
    std::size_t end = first + 1;
    while (end < sorted.size() && sorted[end]->history == sorted[first]->history) ++end;
    const std::span<Slot* const> group(sorted.data() + first, end - first);
    LeaseRequest request;
    request.ttl = lifetimes_.lease();
    request.info = LockInfo{started, group.front()->history, fleet_.error()};
    if (!with_leases(BackendOp::lease, "lock", group, [&](std::span<KeyRead> keys) {
          backend_->claim(keys, request, ctx.request);
        })) {
      // What was won before the failure is kept; the rest goes without.
      for (Slot* s : group) {
        if (s->lease.state != LeaseState::won || !s->lease.lock) s->backing = Backing::degraded;
      }
    }
    first = end;
  }
}

// ---------------------------------------------------------------------------
// confirm: under the lease, read again — someone may have stored meanwhile

void Engine::confirm(Context& ctx, std::vector<Slot*>& won) {
  std::vector<Slot*> unconfirmed, read_with_lease;
  for (Slot* s : won) {
    if (s->confirmed) continue;
    // The claim read the item with the lease: its answer is examined as a
    // confirmation's, without asking again.
    (s->lease.read_with ? read_with_lease : unconfirmed).push_back(s);
  }
  if (!unconfirmed.empty()) {
    if (!with_leases(BackendOp::confirm, "get", unconfirmed,
                     [&](std::span<KeyRead> keys) { backend_->confirm(keys, ctx.request); })) {
      // The lock is held: create, and store only into an empty key.
      for (Slot* s : unconfirmed) s->lease.fence = Fence{Fence::Kind::absent, 0};
      unconfirmed.clear();
    }
  }
  unconfirmed.insert(unconfirmed.end(), read_with_lease.begin(), read_with_lease.end());
  std::vector<Slot*> found_elsewhere;
  for (Slot* s : unconfirmed) {
    s->confirmed = true;
    if (!s->read_item) continue;
    Item item = std::move(*s->read_item);
    s->read_item.reset();
    const TimePoint before = s->created_at;
    const bool had_value = s->has_value();
    const Found found = examine_item(ctx, *s, item, true);
    const bool newer = !had_value || s->created_at > before;
    if ((found == Found::fresh || found == Found::early) && newer) {
      s->at_hand = std::make_shared<const Item>(std::move(item));
      s->value_is_at_hand = true;
      s->served = had_value ? Served::fresh : Served::waited;
      found_elsewhere.push_back(s);
    } else if (had_value && detail::usable(found) && newer) {
      s->at_hand = std::make_shared<const Item>(std::move(item));  // a newer stale value
      s->found = found;
      s->value_is_at_hand = true;
    } else if (!detail::usable(found)) {
      s->created_at = before;  // examine did not keep this item
    }
  }
  if (found_elsewhere.empty()) return;
  release(found_elsewhere, ctx.request);
  for (Slot* s : found_elsewhere) s->lead->publish(s->at_hand);
  std::erase_if(won, [](const Slot* s) { return s->served != Served::none; });
}

// ---------------------------------------------------------------------------
// account: how each key was served, counted in one place

Outcome Engine::account(const Slot& slot) noexcept {
  switch (slot.served) {
    case Served::fresh:
      detail::Counters::add(counters_.hits);
      return Outcome::fresh;
    case Served::local:
      detail::Counters::add(counters_.local_hits);
      return Outcome::fresh;
    case Served::stale:
      detail::Counters::add(counters_.stale_served);
      return Outcome::stale;
    case Served::waited:
      detail::Counters::add(counters_.waited);
      return Outcome::waited;
    case Served::created:
    case Served::none:
      break;
  }
  return Outcome::created;  // counted where it was created
}

}  // namespace dogpile::detail
