// SPDX-License-Identifier: MIT
// Create, store (fenced), publish; the envelopes every write makes.
#include "engine/engine.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "engine/io.hpp"
#include "engine/parts.hpp"

namespace dogpile::detail {

// ---------------------------------------------------------------------------
// create, store (fenced), release, publish

Task<> Engine::create(Context& ctx, std::span<Slot* const> slots, Creator creator, bool background,
                      const LaterCreator* later) {
  Io& io = *ctx.io;
  std::vector<detail::CreateOut> out(slots.size());
  for (std::size_t j = 0; j < slots.size(); ++j) {
    Slot& s = *slots[j];
    s.made = std::make_shared<Item>();
    s.made->flags = detail::kEnvelopeFlags;
    detail::begin_envelope(s.made->data);
    out[j].bytes = &s.made->data;
  }
  // The keeper extends each lock while the creator runs; a creator that runs
  // past max_creation loses that, and its followers start over.
  std::vector<detail::LockKeeper::Ticket> tickets;
  for (Slot* s : slots) {
    if (!s->lease.lock) continue;
    std::function<void()> on_hung;
    if (s->lead) {
      on_hung = [this, key = s->key, flight = s->lead->flight()] { flights_.detach(key, flight); };
    }
    tickets.push_back(keeper_.keep(*s->lease.lock, std::string(s->user_key),
                                   detail::LockKeeper::interval_for(s->lease.lock->ttl()),
                                   options_.max_creation, std::move(on_hung)));
  }
  const TimePoint started = clock_.now();
  const SteadyTime started_steady = clock_.steady_now();  // for the metric: no clock steps
  std::exception_ptr error;
  if (later != nullptr) {
    try {
      co_await io.later([&](std::function<void(std::exception_ptr)> done) {
        (*later)(slots, out, std::move(done));
        return true;
      });
    } catch (...) {
      error = std::current_exception();
    }
  } else {
    co_await io.create([&] {
      try {
        creator(slots, out);
      } catch (...) {
        error = std::current_exception();
      }
    });
  }
  if (error) {
    metrics_.creation(slots.front()->user_key, slots.size(), clock_.steady_now() - started_steady,
                      false, background);
    tickets.clear();
    co_await io.request([&] { release(slots, ctx.request); });
    detail::Counters::add(counters_.creation_errors);
    bool all_served = true;
    for (Slot* s : slots) {
      s->made.reset();
      if ((background || options_.serve_stale_on_error) && s->has_value()) {
        if (!background) serve_at_hand(ctx, *s);
        if (background) s->lead->publish(s->at_hand);
        continue;
      }
      all_served = false;
      if (s->lead) s->lead->fail(error);
    }
    if (background || all_served) {
      reporter_.report(
          ErrorKind::creator, background ? "background create" : "create", slots.front()->user_key,
          what_of(error) + (background ? "; the stale value stays" : "; serving the stale value"));
      if (background || all_served) co_return;
    }
    std::rethrow_exception(error);
  }
  tickets.clear();
  const Duration ran = clock_.now() - started;
  metrics_.creation(slots.front()->user_key, slots.size(), clock_.steady_now() - started_steady,
                    true, background);
  const auto took = std::max(std::chrono::microseconds::zero(),
                             std::chrono::duration_cast<std::chrono::microseconds>(ran));
  const TimePoint created_at = fleet_.earliest();
  std::vector<Slot*> to_store;
  for (std::size_t j = 0; j < slots.size(); ++j) {
    Slot& s = *slots[j];
    s.keep = out[j].keep;
    try {
      finish(s.made->data, created_at, took, s.check, detail::EnvelopeKind::value);
    } catch (const std::length_error& e) {
      reporter_.report(ErrorKind::backend, "set", s.user_key, e);
      s.made.reset();
      continue;
    }
    if (!s.keep) continue;
    // Without a lock (the backend failing) store only into an empty key.
    if (!s.lease.lock && !s.confirmed) s.lease.fence = Fence{Fence::Kind::absent, 0};
    s.stored = false;
    to_store.push_back(&s);
  }
  bool store_failed = false;
  if (!to_store.empty()) {
    std::vector<KeyWrite> writes(to_store.size());
    for (std::size_t i = 0; i < to_store.size(); ++i) {
      Slot& s = *to_store[i];
      writes[i] = KeyWrite{.key = s.key,
                           .item = s.made.get(),
                           .ttl = ctx.ttl,
                           .fence = s.lease.fence,
                           .lease = &s.lease};
    }
    co_await io.request([&] {
      store_failed = !attempt("set", to_store.front()->user_key, [&] {
        metrics_.backend(BackendOp::store, to_store.front()->user_key, writes.size(),
                         [&] { backend_->write(writes, ctx.request); });
      });
    });
    for (std::size_t i = 0; i < to_store.size() && !store_failed; ++i) {
      Slot& s = *to_store[i];
      s.stored = writes[i].stored;
      if (s.stored) {
        fill_local(ctx, s, *s.made, writes[i].cas, false);
        continue;
      }
      detail::Counters::add(counters_.fenced_out);
      reporter_.report(ErrorKind::fenced, "set", s.user_key,
                       "the key was written (set, removed, or created elsewhere) while this "
                       "value was made; it was returned, not stored");
    }
  }
  // Degraded mode: what was made without the backend is kept in process, so
  // that this process's next callers of the key find it.
  // A value stored replaces a copy kept of its key; one fenced out (the key
  // was written meanwhile, with what this process does not know) drops it.
  const SteadyTime until = kept_until(ctx);
  for (Slot* s : to_store) {
    if (s->backing == Backing::degraded || store_failed) {
      kept_.put_written(s->key, s->made, until);
    } else if (!kept_.empty()) {
      kept_.update(s->key, s->stored ? s->made : nullptr, until);
    }
  }
  co_await io.request([&] { release(slots, ctx.request); });
  for (Slot* s : slots) {
    held_.forget(s->key);
    detail::Counters::add(counters_.created);
    if (s->backing == Backing::degraded) detail::Counters::add(counters_.degraded);
    if (s->lead) {
      if (s->made) {
        s->lead->publish(s->made);
      } else {
        s->lead->abandon();  // nothing to hand over: followers start over
      }
    }
    s->served = Served::created;
  }
}

// create() with the call's own creator, given the slots' value indices.
Task<> Engine::create_for_call(Context& ctx, std::span<Slot* const> slots) {
  auto call_creator = [&](std::span<Slot* const> made, std::span<detail::CreateOut> out) {
    std::vector<std::size_t> indices;
    indices.reserve(made.size());
    for (const Slot* s : made) indices.push_back(s->index);
    ctx.call->create(indices, out);
  };
  if (ctx.call->start_create == nullptr) {
    co_await create(ctx, slots, call_creator, false);
    co_return;
  }
  auto start = [&](std::span<Slot* const> made, std::span<detail::CreateOut> out,
                   detail::CreatedFn done) {
    std::vector<std::size_t> indices;
    indices.reserve(made.size());
    for (const Slot* s : made) indices.push_back(s->index);
    (*ctx.call->start_create)(indices, out, std::move(done));
  };
  const LaterCreator later(start);
  co_await create(ctx, slots, call_creator, false, &later);
}

std::shared_ptr<Item> Engine::envelope(std::string_view user_key, std::uint64_t check,
                                       detail::FunctionRef<void(std::string&)> encode,
                                       std::chrono::microseconds took, detail::EnvelopeKind kind) {
  auto item = std::make_shared<Item>();
  item->flags = detail::kEnvelopeFlags;
  detail::begin_envelope(item->data);
  encode(item->data);
  try {
    finish(item->data, fleet_.earliest(), took, check, kind);
  } catch (const std::length_error& e) {
    reporter_.report(ErrorKind::backend, "set", user_key, e);
    return nullptr;
  }
  return item;
}

void Engine::finish(std::string& envelope, TimePoint created_at, std::chrono::microseconds took,
                    std::uint64_t check, detail::EnvelopeKind kind) {
  const auto encoding =
      detail::finish_envelope(envelope, created_at, took, check, kind,
                              {options_.compression.threshold, options_.compression.level});
  if (encoding != detail::PayloadEncoding::plain) detail::Counters::add(counters_.compressed);
}

// The codec's bytes of an envelope already examined (its payload, or that
// decompressed into `scratch`); nullopt if it does not decompress.
std::optional<std::string_view> Engine::payload_of(const detail::EnvelopeView& envelope,
                                                   std::string& scratch) const {
  detail::EnvelopeError error{};
  return detail::payload_bytes(envelope, scratch, options_.compression.max_size, error);
}

}  // namespace dogpile::detail
