// SPDX-License-Identifier: MIT
// Reads and what they mean: decode, judge, the local tier, degraded copies.
// Every operation of the engine reads through these.
#include "engine/engine.hpp"

#include <stdexcept>
#include <string>
#include <utility>

#include "dogpile/detail/loop.hpp"
#include "engine/io.hpp"
#include "engine/parts.hpp"

namespace dogpile::detail {

// ---------------------------------------------------------------------------
// read and judge

Found Engine::examine(const Context& ctx, Slot& slot, std::string_view data, std::uint32_t flags,
                      bool quiet, Decode decode) {
  const auto result = detail::decode_envelope(data, flags, slot.check);
  if (!result.envelope) {
    // An empty item with no flags is a meta-protocol lease placeholder
    // (another client's creation in progress): a miss, not an error.
    const bool placeholder = data.empty() && flags == 0;
    if (!quiet && !placeholder) {
      reporter_.report(ErrorKind::decode, "decode", slot.user_key, detail::to_string(result.error),
                       {}, detail::code_of(result.error));
    }
    return Found::missing;
  }
  const auto& envelope = *result.envelope;
  if (envelope.creation_duration > std::chrono::microseconds::zero()) {
    slot.history = envelope.creation_duration;
  }
  if (envelope.kind == detail::EnvelopeKind::tombstone) return Found::missing;
  Found found = judge_.judge(envelope, fleet_.latest(), ctx.expiration, invalidations_.current(),
                             ctx.allow_early);
  if (found == Found::missing) return found;
  // Marked stale (a per-key soft invalidation), whatever its age: in the
  // envelope, or by the backend (memcached meta: the item's stale bit).
  const bool marked = envelope.kind == detail::EnvelopeKind::stale || slot.marked_stale;
  if (marked && found != Found::stale) found = Found::stale;
  Scratch scratch;
  detail::EnvelopeError error{};
  const auto payload =
      detail::payload_bytes(envelope, scratch.get(), options_.compression.max_size, error);
  if (!payload) {
    if (!quiet)
      reporter_.report(ErrorKind::decode, "decode", slot.user_key, detail::to_string(error), {},
                       detail::code_of(error));
    return Found::missing;
  }
  if (!decode(*payload)) {
    if (!quiet) {
      reporter_.report(ErrorKind::decode, "decode", slot.user_key,
                       "the stored value does not decode as the requested type", {}, "codec");
    }
    return Found::missing;
  }
  slot.created_at = envelope.created_at;
  slot.took = envelope.creation_duration;
  return found;
}

Found Engine::examine_item(Context& ctx, Slot& slot, const Item& item, bool quiet) {
  const Found found =
      examine(ctx, slot, item.data, item.flags, quiet,
              [&](std::string_view payload) { return ctx.decode(slot.index, payload); });
  slot.value_is_at_hand = false;  // the value slot now holds this item's value, or nothing
  return found;
}

// The hot path's read: one request; the bytes are kept only if the value is
// not fresh (a stale value may be served, or handed to followers). Its
// parts, shared by the blocking read and the event loop's.
struct Engine::ReadOne {
  ReadOne(Engine& e, Context& c, Slot& s) : engine(e), ctx(c), slot(s) {
    slot.at_hand.reset();
    if (slot.backing == Backing::read_failed) slot.backing = Backing::answering;
  }
  // What the backend hands over, as it reads.
  void visit(std::size_t, std::string_view data, std::uint32_t flags) {
    const detail::Stopwatch watch(engine.metrics_, decoding);
    there = true;
    slot.marked_stale = one.marked_stale;
    slot.read_cas = one.cas;
    slot.found = engine.examine(ctx, slot, data, flags, false, [&](std::string_view payload) {
      return ctx.decode(slot.index, payload);
    });
    if (detail::usable(slot.found) && slot.found != Found::fresh) {
      slot.at_hand = std::make_shared<const Item>(Item{std::string(data), flags});
      slot.value_is_at_hand = true;
    } else if (slot.found == Found::fresh && engine.local_.enabled()) {
      engine.fill_local(ctx, slot, Item{std::string(data), flags}, one.cas);
    }
    if (!engine.kept_.empty()) {
      engine.note_read(ctx, slot.key,
                       !detail::usable(slot.found) ? nullptr
                       : slot.at_hand
                           ? slot.at_hand
                           : std::make_shared<const Item>(Item{std::string(data), flags}));
    }
  }
  // After the request: `ok`, or it failed (reported).
  void end(bool ok) {
    if (!ok) {
      engine.read_failed(ctx, slot);
      return;
    }
    if (!there) {
      slot.found = Found::missing;
      slot.marked_stale = false;
      if (!engine.kept_.empty()) engine.note_read(ctx, slot.key, nullptr);
    }
    if (slot.lease.state == LeaseState::won) slot.confirmed = true;  // granted in the read
  }

  Engine& engine;
  Context& ctx;
  Slot& slot;
  KeyRead one{.key = slot.key, .lease = &slot.lease};
  bool there = false;
  Duration decoding{};  // in the visitor: not the request's time
};

void Engine::read_one(Context& ctx, Slot& slot) {
  ReadOne r(*this, ctx, slot);
  auto visit = [&r](std::size_t i, std::string_view data, std::uint32_t flags) {
    r.visit(i, data, flags);
  };
  const Backend::Visit visitor(visit);
  const bool ok = attempt("get", slot.user_key, [&] {
    for (int tries = 0;; ++tries) {
      try {
        metrics_.backend(
            BackendOp::get, slot.user_key, 1,
            [&] {
              backend_->read({&r.one, 1}, ctx.read_request, ctx.request, &visitor);
            },
            &r.decoding);
        return;
      } catch (const BackendError& e) {
        // The failure moved the key (to the gutter) before any of its value
        // arrived: read it there at once.
        if (tries > 0 || !e.moved() || r.there) throw;
      }
    }
  });
  r.end(ok);
}

// read_one on an event loop: the backend's own read on the loop if it has
// one (Backend::start_read), else read_one where blocking is allowed.
Task<> Engine::read_one_on_loop(Context& ctx, Slot& slot) {
  Io& io = *ctx.io;
  Loop* loop = io.loop();
  if (loop != nullptr) {
    ReadOne r(*this, ctx, slot);
    auto visit = [&r](std::size_t i, std::string_view data, std::uint32_t flags) {
      r.visit(i, data, flags);
    };
    const Backend::Visit visitor(visit);
    const SteadyTime started = metrics_.now();
    bool made = false;
    std::exception_ptr error;
    try {
      co_await io.later([&](std::function<void(std::exception_ptr)> done) {
        // Once begun, the read may end and resume this frame on another
        // thread before start_read returns: nothing of the frame is
        // touched after a begun read.
        made = true;
        try {
          if (backend_->start_read(r.one, ctx.read_request, ctx.request, &visitor, *loop,
                                   std::move(done))) {
            return true;
          }
        } catch (...) {
          made = false;
          throw;
        }
        made = false;
        return false;
      });
    } catch (...) {
      error = std::current_exception();
    }
    if (made) {
      metrics_.record(BackendOp::get, slot.user_key, 1, metrics_.now() - started - r.decoding,
                      !error);
      bool moved = false;
      if (error) {
        try {
          std::rethrow_exception(error);
        } catch (const BackendError& e) {
          moved = e.moved() && !r.there;
        } catch (...) {
        }
      }
      // (A failure that moved the key: read again where it went, below.)
      if (!moved) {
        const bool ok = attempt("get", slot.user_key, [&] {
          if (error) std::rethrow_exception(error);
        });
        r.end(ok);
        co_return;
      }
    }
  }
  co_await io.request([&] { read_one(ctx, slot); });
}

void Engine::note_read(const Context& ctx, std::string_view key, std::shared_ptr<const Item> item) {
  if (kept_.empty()) return;
  kept_.update(key, std::move(item), kept_until(ctx));
}

SteadyTime Engine::kept_until(const Context& ctx) const noexcept {
  return clock_.steady_now() +
         std::chrono::duration_cast<SteadyTime::duration>(lifetimes_.kept(ctx.expiration));
}

// The backend could not be read for `slot`: what this process kept for it
// while the backend failed (degraded mode) is judged as a stored value
// would be; without one, the slot is a miss. Either way it is created, if it
// must be, without asking the backend for a lock.
void Engine::read_failed(Context& ctx, Slot& slot, bool count) {
  slot.backing = Backing::read_failed;
  slot.found = Found::error;
  slot.at_hand.reset();
  slot.value_is_at_hand = false;
  if (!ctx.serve_kept) return;
  const auto kept = kept_.get(slot.key, clock_.steady_now());
  if (!kept) return;
  const Found found = examine_item(ctx, slot, *kept, true);
  if (!detail::usable(found)) return;
  slot.found = found;
  slot.at_hand = kept;
  slot.value_is_at_hand = true;
  if (count) detail::Counters::add(counters_.kept_served);
}

// The local tier: a value this process read, made or wrote lately is served
// with no request while it is fresh by its envelope and younger than the
// tier's time to live. The writes counted before the slot's read fence its
// fill (a set or remove that landed meanwhile wins).
bool Engine::serve_local(Context& ctx, Slot& slot, bool may_revalidate) {
  const SteadyTime now =
      ctx.started ? *std::exchange(ctx.started, std::nullopt) : clock_.steady_now();
  // One key: the item is borrowed from this thread's front (no shared
  // count taken), decoded here and not kept. Many keys keep theirs: a key
  // given twice is decoded again at the end.
  if (ctx.call == nullptr || ctx.call->keys.size() == 1) {
    // The codec may run user code that looks keys up again: what is
    // borrowed here stays valid until the scope ends.
    const detail::LocalStore::BorrowScope scope;
    if (const Item* borrowed = local_.borrow(slot.key, now, &slot.local_writes)) {
      if (examine_held(ctx, slot, *borrowed) != Found::fresh) {
        local_.discard(slot.key, borrowed);  // the read that follows may fill a newer one
        return false;
      }
      slot.found = Found::fresh;
      slot.served = Served::local;
      slot.at_hand.reset();
      slot.value_is_at_hand = true;
      return true;
    }
  }
  auto item = (ctx.call == nullptr || ctx.call->keys.size() == 1)
                  ? nullptr
                  : local_.get(slot.key, now, &slot.local_writes);
  if (!item && may_revalidate && options_.local->revalidate) {
    item = revalidate_local(ctx, slot, now);
  }
  if (!item) return false;
  if (examine_held(ctx, slot, *item) != Found::fresh) {
    local_.discard(slot.key, item.get());  // the read that follows may fill a newer one
    return false;
  }
  slot.found = Found::fresh;
  slot.served = Served::local;
  slot.at_hand = std::move(item);
  slot.value_is_at_hand = true;
  return true;
}

// A one-key call names its value's type: the value it has just decoded is
// held beside the envelope.
void Engine::fill_local(const Context& ctx, const Slot& slot, const Item& item, Cas version,
                        bool decoded) {
  if (!local_.enabled()) return;
  const detail::Typed* typed =
      decoded && ctx.call != nullptr && ctx.call->keys.size() == 1 ? ctx.call->typed : nullptr;
  auto kept = held(item, typed);
  // Beyond what LocalStore::cost counts for an Item: the held item's own
  // fields, and a decoded value's block (its shared count and object) and
  // what it holds on the heap, taken as its encoded bytes (glibc's rounding).
  const auto block = [](std::size_t bytes) { return (bytes + 8 + 15) / 16 * 16; };
  std::size_t extra = sizeof(detail::HeldItem) - sizeof(Item);
  if (kept->object) extra += block(16 + typed->size) + block(kept->data.size());
  const SteadyTime now = clock_.steady_now();
  local_.put_read(slot.key, std::move(kept), now, now + local_ttl(), slot.local_writes,
                  options_.local->revalidate ? version : 0, extra);
}

// The local tier holds values decompressed: a zstd payload is undone once,
// when the value goes in, not at every hit. The envelope is otherwise the
// same (its time, kind and key check), so it is judged as the stored one.
// One that does not decompress goes in as it is, to be refused at its hit.
std::shared_ptr<const detail::HeldItem> Engine::held(const Item& item,
                                                     const detail::Typed* typed) const {
  auto kept = std::make_shared<detail::HeldItem>();
  kept->flags = item.flags;
  if (typed != nullptr) {
    kept->object = typed->hold();
    if (kept->object) kept->type = typed->type;
  }
  const auto decoded = detail::decode_envelope(item.data, item.flags);
  if (decoded.envelope && decoded.envelope->encoding != detail::PayloadEncoding::plain) {
    const detail::EnvelopeView& envelope = *decoded.envelope;
    std::string scratch;
    detail::EnvelopeError error{};
    const auto payload =
        detail::payload_bytes(envelope, scratch, options_.compression.max_size, error);
    if (payload) {
      try {
        detail::begin_envelope(kept->data);
        kept->data.append(*payload);
        detail::finish_envelope(kept->data, envelope.created_at, envelope.creation_duration,
                                envelope.key_check, envelope.kind);
        return kept;
      } catch (const std::length_error&) {
        kept->data.clear();
      }
    }
  }
  kept->data = item.data;
  return kept;
}

Found Engine::examine_held(Context& ctx, Slot& slot, const Item& item) {
  const auto& kept = static_cast<const detail::HeldItem&>(item);  // all the tier holds is
  const detail::Typed* typed =
      ctx.call != nullptr && ctx.call->keys.size() == 1 ? ctx.call->typed : nullptr;
  if (typed == nullptr || !kept.object || kept.type != typed->type) {
    return examine_item(ctx, slot, item, true);
  }
  const Found found = examine(ctx, slot, item.data, item.flags, true, [&](std::string_view) {
    typed->take(kept.object.get());
    return true;
  });
  slot.value_is_at_hand = false;
  return found;
}

std::shared_ptr<const Item> Engine::revalidate_local(Context& ctx, Slot& slot, SteadyTime now) {
  auto old = local_.expired(slot.key, now);
  if (!old.item) return nullptr;
  KeyRead key{.key = slot.key};
  const LeaseRequest version_only{.version_only = true};
  if (!attempt("revalidate", slot.user_key, [&] {
        metrics_.backend(BackendOp::revalidate, slot.user_key, 1, [&] {
          backend_->read({&key, 1}, version_only, ctx.request);
        });
      })) {
    return nullptr;  // the read that follows says what the backend says
  }
  // Changed, gone, or marked stale (md k I): read it again. (A server
  // restarted meanwhile starts empty: the key is gone, or written since under
  // a new version; the same CAS for the same key would take that write to
  // land on exactly the number this item had.)
  if (key.cas == 0 || key.cas != old.version || key.marked_stale) {
    local_.discard(slot.key, old.item.get());
    return nullptr;
  }
  if (!local_.renew(slot.key, old.item.get(), now + local_ttl())) return nullptr;
  detail::Counters::add(counters_.revalidated);
  return std::move(old.item);
}

bool Engine::with_leases(BackendOp what, std::string_view name, std::span<Slot* const> slots,
                         FunctionRef<void(std::span<KeyRead>)> op, std::string_view note) {
  std::vector<KeyRead> keys(slots.size());
  for (std::size_t i = 0; i < slots.size(); ++i)
    keys[i] = KeyRead{.key = slots[i]->key, .lease = &slots[i]->lease};
  const bool ok = attempt(
      name, slots.front()->user_key,
      [&] { metrics_.backend(what, slots.front()->user_key, slots.size(), [&] { op(keys); }); },
      note);
  if (!ok) return false;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    slots[i]->read_item = keys[i].item ? std::make_unique<Item>(std::move(*keys[i].item)) : nullptr;
    slots[i]->read_cas = keys[i].cas;
    slots[i]->marked_stale = keys[i].marked_stale;
  }
  return true;
}

void Engine::read(Context& ctx, std::span<Slot* const> slots) {
  for (Slot* s : slots) {
    if (s->backing == Backing::read_failed) s->backing = Backing::answering;
  }
  if (!with_leases(BackendOp::get, "get_multi", slots, [&](std::span<KeyRead> keys) {
        backend_->read(keys, ctx.read_request, ctx.request);
      })) {
    for (Slot* s : slots) read_failed(ctx, *s);
    return;
  }
  for (Slot* s : slots) {
    s->at_hand.reset();
    s->found = Found::missing;
    if (s->read_item) {
      s->found = examine_item(ctx, *s, *s->read_item, false);
      if (detail::usable(s->found)) {
        s->at_hand = std::make_shared<const Item>(std::move(*s->read_item));
        s->value_is_at_hand = true;
        if (s->found == Found::fresh) fill_local(ctx, *s, *s->at_hand, s->read_cas);
      }
      s->read_item.reset();
    }
    if (!kept_.empty()) note_read(ctx, s->key, detail::usable(s->found) ? s->at_hand : nullptr);
    if (s->lease.state == LeaseState::won) s->confirmed = true;
  }
}

}  // namespace dogpile::detail
