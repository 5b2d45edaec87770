// SPDX-License-Identifier: MIT
// The region's other operations: get, set, remove, invalidate and their
// multi forms, on the same reads as the step.
#include "engine/engine.hpp"

#include <algorithm>
#include <utility>

#include "engine/parts.hpp"
#include "format/keys.hpp"

namespace dogpile::detail {

bool Engine::get(std::string_view user_key, Decode decode, TimePoint* created_at, bool* fresh,
                 const Expiration* expiration) {
  prepare();
  auto one = [&](std::size_t, std::string_view payload) { return decode(payload); };
  const DecodeAt decoder(one);
  Context ctx;
  ctx.decoder = &decoder;
  ctx.expiration = expiration != nullptr ? *expiration : options_.expiration;
  ctx.allow_early = false;
  ctx.serve_kept = false;  // a failed read is a miss here, and reported
  Slot slot;
  aim(slot, user_key);
  if (local_.enabled() && serve_local(ctx, slot)) {
    detail::Counters::add(counters_.local_hits);
  } else {
    read_one(ctx, slot);
    detail::Counters::add(slot.found == Found::fresh ? counters_.hits : counters_.misses);
  }
  if (!detail::usable(slot.found)) return false;
  if (fresh != nullptr) *fresh = slot.found == Found::fresh;
  if (created_at != nullptr) *created_at = slot.created_at;
  return true;
}

bool Engine::set(std::string_view user_key, Encode encode, const Expiration* expiration) {
  prepare();
  Written written(*this);
  const auto [key, check] = written.add(user_key);
  auto item = envelope(user_key, check, encode, std::chrono::microseconds(0));
  if (!item) return false;
  const Ttl ttl = lifetimes_.item(expiration ? *expiration : options_.expiration);
  return attempt("set", user_key, [&] {
    metrics_.backend(BackendOp::store, user_key, 1, [&] { backend_->set(key, *item, ttl); });
  });
}

bool Engine::remove(std::string_view user_key) {
  prepare();
  Written written(*this);
  const auto [key, check] = written.add(user_key);
  bool existed = false;
  const bool ok = attempt("remove", user_key, [&] {
    // The tombstone keeps the removed value's creation duration: whoever
    // waits for the next creation knows how long it will likely take.
    // A read that fails does not stop the tombstone: if the server cannot
    // take it either, the transport keeps the key to delete there once it
    // answers (its journal).
    std::optional<Item> before;
    try {
      before = metrics_.backend(BackendOp::get, user_key, 1, [&] { return backend_->get(key); });
    } catch (const std::exception&) {
    }
    std::chrono::microseconds took{0};
    if (before) {
      const auto env = detail::decode_envelope(before->data, before->flags, check);
      existed = env.envelope && env.envelope->kind == detail::EnvelopeKind::value;
      if (env.envelope) took = env.envelope->creation_duration;
    }
    auto tombstone = envelope(
        user_key, check, [](std::string&) {}, took, detail::EnvelopeKind::tombstone);
    metrics_.backend(BackendOp::store, user_key, 1,
                     [&] { backend_->set(key, *tombstone, lifetimes_.tombstone()); });
    detail::Counters::add(counters_.removals);
  });
  return ok && existed;
}

bool Engine::invalidate(std::string_view user_key, Invalidation kind) {
  if (kind == Invalidation::hard) return remove(user_key);
  prepare();
  Written written(*this);
  const auto [key, check] = written.add(user_key);
  const Ttl keep_for = lifetimes_.marked_stale();
  bool marked = false;
  const bool ok = attempt("invalidate", user_key, [&] {
    // One request where the backend marks items stale itself (one that
    // cannot says so without a request, and is not counted).
    const SteadyTime started = metrics_.now();
    std::optional<bool> in_place;
    try {
      in_place = backend_->mark_stale(key, keep_for, Request{});
    } catch (...) {
      metrics_.record(BackendOp::mark_stale, user_key, 1, metrics_.now() - started, false);
      throw;
    }
    if (in_place) {
      metrics_.record(BackendOp::mark_stale, user_key, 1, metrics_.now() - started, true);
      marked = *in_place;
      return;
    }
    // Else the value is rewritten, marked, unless it changed meanwhile.
    for (int tries = 0; tries < 4; ++tries) {
      Cas version = 0;
      std::optional<Item> item;
      try {
        item = metrics_.backend(BackendOp::get, user_key, 1,
                                [&] { return backend_->gets(key, version); });
      } catch (const std::exception&) {
        // The value cannot be read to be marked: it is removed instead (or,
        // the server away, kept by the transport to be removed when it
        // answers).
        metrics_.backend(BackendOp::store, user_key, 1, [&] { backend_->remove(key); });
        throw;
      }
      if (!item) return;
      const auto env = detail::decode_envelope(item->data, item->flags, check);
      if (!env.envelope || env.envelope->kind == detail::EnvelopeKind::tombstone) return;
      marked = env.envelope->kind == detail::EnvelopeKind::stale;
      if (marked) return;
      detail::mark_envelope_stale(item->data);
      marked = metrics_.backend(BackendOp::store, user_key, 1, [&] {
        if (version != 0) return backend_->cas(key, *item, keep_for, version);
        backend_->set(key, *item, keep_for);  // a backend without versions
        return true;
      });
      if (marked) return;
    }
    reporter_.report(ErrorKind::backend, "invalidate", user_key,
                     "the value kept changing while it was marked stale; left as it is");
  });
  return ok && marked;
}

// Many keys in one request per server. Each answer is judged in one slot,
// reused: a million keys need no million slots (nor the step's flights).
void Engine::get_multi(std::span<const std::string_view> user_keys, DecodeAt decode) {
  prepare();
  if (user_keys.empty()) return;
  Context ctx;
  ctx.decoder = &decode;
  ctx.expiration = options_.expiration;
  ctx.allow_early = false;
  std::vector<std::string> keys(user_keys.size());
  std::vector<KeyRead> leases(user_keys.size());
  for (std::size_t i = 0; i < user_keys.size(); ++i) {
    keys[i] = map(user_keys[i]).key;
    leases[i].key = keys[i];
  }
  if (!attempt("get_multi", user_keys.front(), [&] {
        metrics_.backend(BackendOp::get, user_keys.front(), leases.size(),
                         [&] { backend_->read(leases, LeaseRequest{}, Request{}); });
      })) {
    return;
  }
  std::uint64_t hits = 0;
  for (std::size_t i = 0; i < leases.size(); ++i) {
    if (!leases[i].item) {
      note_read(ctx, keys[i], nullptr);
      continue;
    }
    Slot slot;
    slot.user_key = user_keys[i];
    slot.check = detail::key_check(keys[i]);
    slot.index = i;
    slot.marked_stale = leases[i].marked_stale;
    const Found found = examine_item(ctx, slot, *leases[i].item, false);
    hits += found == Found::fresh;
    if (!kept_.empty()) {
      note_read(ctx, keys[i],
                detail::usable(found) ? std::make_shared<const Item>(std::move(*leases[i].item))
                                      : nullptr);
    }
    leases[i].item.reset();  // decoded: its bytes are not needed any more
  }
  detail::Counters::add(counters_.hits, hits);
  detail::Counters::add(counters_.misses, leases.size() - hits);
}

bool Engine::set_multi(std::span<const std::string_view> user_keys, EncodeAt encode) {
  prepare();
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Item>> items;
  Written written(*this);  // what was set is read again from the backend
  bool ok = true;
  for (std::size_t i = 0; i < user_keys.size(); ++i) {
    auto [key, check] = written.add(user_keys[i]);
    auto item = envelope(
        user_keys[i], check, [&](std::string& out) { encode(i, out); },
        std::chrono::microseconds(0));
    if (!item) {
      ok = false;
      continue;
    }
    keys.push_back(std::move(key));
    items.push_back(std::move(item));
  }
  if (keys.empty()) return ok;
  std::vector<KeyedItem> batch;
  for (std::size_t i = 0; i < keys.size(); ++i) batch.push_back(KeyedItem{keys[i], items[i].get()});
  const Ttl ttl = lifetimes_.item(options_.expiration);
  return attempt("set_multi", user_keys.front(),
                 [&] {
                   metrics_.backend(BackendOp::store, user_keys.front(), batch.size(),
                                    [&] { backend_->set_multi(batch, ttl); });
                 }) &&
         ok;
}

bool Engine::remove_multi(std::span<const std::string_view> user_keys) {
  prepare();
  if (user_keys.empty()) return true;
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Item>> tombstones;
  Written written(*this);
  for (auto user_key : user_keys) {
    auto [key, check] = written.add(user_key);
    tombstones.push_back(envelope(
        user_key, check, [](std::string&) {}, std::chrono::microseconds(0),
        detail::EnvelopeKind::tombstone));
    keys.push_back(std::move(key));
  }
  std::vector<KeyedItem> batch;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    batch.push_back(KeyedItem{keys[i], tombstones[i].get()});
  }
  return attempt("remove_multi", user_keys.front(), [&] {
    metrics_.backend(BackendOp::store, user_keys.front(), batch.size(),
                     [&] { backend_->set_multi(batch, lifetimes_.tombstone()); });
    detail::Counters::add(counters_.removals, batch.size());
  });
}

void Engine::invalidate(Invalidation kind) {
  prepare();
  invalidations_.invalidate(kind, fleet_.latest());
}

}  // namespace dogpile::detail
