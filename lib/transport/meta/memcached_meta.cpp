// SPDX-License-Identifier: MIT
// MemcachedMetaBackend: the engine's operations on memcached's meta commands.
// The client (connections, health, placement, bounds) is wire_client.cpp; a
// batch of meta requests is meta_batch.cpp; the protocol's text is
// meta_protocol.cpp.
#include "dogpile/memcached_meta.hpp"
#include "transport/meta/meta_parts.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <utility>

#include "dogpile/detail/loop.hpp"
#include "format/keys.hpp"
#include "format/lock_item.hpp"
#include "transport/exptime.hpp"
#include "transport/journal.hpp"
#include "transport/meta/meta_batch.hpp"
#include "transport/meta/meta_options.hpp"
#include "transport/wire_client.hpp"

namespace dogpile {

namespace meta = detail::meta;
namespace wire = detail::wire;
using detail::check_backend_key;
using detail::kMaxRelativeExpiration;
using detail::lock_exptime;
using meta::Code;
using meta::Reply;

using detail::meta_parts::give_back;
using detail::meta_parts::Impl;
using detail::meta_parts::kind_of;
using detail::meta_parts::MetaLease;
using detail::meta_parts::one;
using detail::meta_parts::placeholder;
using detail::meta_parts::run;
using detail::meta_parts::unasked;
using detail::meta_parts::Unasked;
using detail::meta_parts::unexpected;

// ---------------------------------------------------------------------------
// The backend

namespace {

// Gives back, when it goes, the leases that reads won without asking (even
// if what follows the read throws).
struct GiveBack {
  const std::shared_ptr<Impl>& impl;
  std::vector<Unasked> leases;
  ~GiveBack() {
    for (const auto& lease : leases) {
      try {
        give_back(impl, lease);
      } catch (...) {  // it expires with its item
      }
    }
  }
  void add(std::optional<Unasked> lease) {
    if (lease) leases.push_back(std::move(*lease));
  }
};

// How a read's, claim's or poll's reply from `server` leaves a key.
// `with_item`: copy the value into key.item. A lease the reply grants a key
// that asked for none is handed to `unasked_leases`, to be given back.
void take_reply(const std::shared_ptr<Impl>& impl, std::size_t server, KeyRead& key,
                const Reply& reply, Ttl lease_ttl, bool with_item, GiveBack& unasked_leases) {
  key.item.reset();
  key.cas = 0;
  key.marked_stale = false;
  Lease* lease = key.lease;
  if (lease != nullptr) {
    lease->read_with = false;
    lease->holder = {};
  }
  if (reply.code == Code::en) {
    if (lease != nullptr) lease->state = LeaseState::free;
    return;
  }
  if (reply.code != Code::va && reply.code != Code::hd) unexpected("get", key.key, reply);
  key.cas = reply.cas.value_or(0);
  key.marked_stale = reply.stale;
  if (with_item && !placeholder(reply)) {
    key.item = Item{std::string(reply.data), reply.flags.value_or(0)};
  }
  if (lease == nullptr) {
    unasked_leases.add(unasked(key.key, server, reply));
    return;
  }
  if (reply.won) {
    lease->lock = std::make_unique<MetaLease>(impl, server, std::string(key.key), kind_of(reply),
                                              key.cas, lease_ttl);
    lease->state = LeaseState::won;
    lease->fence = Fence{Fence::Kind::version, key.cas};
    lease->read_with = true;
  } else {
    lease->state = reply.held ? LeaseState::held : LeaseState::free;
  }
}

// A key that got no reply (a quiet read's miss).
void no_item(KeyRead& key) noexcept {
  key.item.reset();
  key.cas = 0;
  key.marked_stale = false;
  if (key.lease != nullptr) {
    key.lease->state = LeaseState::free;
    key.lease->read_with = false;
  }
}

// The flags of a read for `request`; the last ones made on this thread are
// kept (a region asks the same on every call).
const std::string& read_flags(const LeaseRequest& request) {
  struct Made {
    bool claim_if_missing = false;
    std::optional<Ttl> below;
    Ttl ttl{-1};
    std::string flags;
  };
  thread_local Made made;
  if (made.ttl == request.ttl && made.claim_if_missing == request.claim_if_missing &&
      made.below == request.claim_if_ttl_below && request.ttl <= kMaxRelativeExpiration) {
    return made.flags;
  }
  std::string flags;
  if (request.claim_if_missing) flags += fmt::format("N{} ", lock_exptime(request.ttl));
  // R0 would never win; a grace under a second cannot be told apart on the
  // server's one-second clock.
  if (request.claim_if_ttl_below && request.claim_if_ttl_below->count() > 0) {
    flags += fmt::format("R{} ", request.claim_if_ttl_below->count());
  }
  flags += "v f c t";
  made = Made{request.claim_if_missing, request.claim_if_ttl_below, request.ttl, std::move(flags)};
  return made.flags;
}

// One pipeline per server of `mg` requests for keys `key_of(i)` (checked
// first: nothing is sent if one is not a memcached key), `flags` each;
// `on_reply(i, server, reply)` for every reply, `on_miss(i)` (quiet) for the
// keys that got none. `server_of(i)`: where key i goes.
template <class ServerOf, class KeyOf, class OnReply, class OnMiss>
void mg_batch(Impl& impl, std::size_t n, ServerOf server_of, KeyOf key_of, std::string_view flags,
              bool quiet, std::string_view op, OnReply on_reply, OnMiss on_miss,
              const Request& request) {
  for (std::size_t i = 0; i < n; ++i) check_backend_key(op, key_of(i));
  const std::string with_q = quiet ? std::string(flags) + " q" : std::string(flags);
  for (const auto& [server, group] : wire::by_server(n, server_of)) {
    run(
        impl, server, op, group.size(), quiet,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          meta::append_mg(out, key_of(group[j]), with_q, opaque);
        },
        [&](std::size_t j, const Reply* r) {
          if (r == nullptr) {
            on_miss(group[j]);
          } else {
            on_reply(group[j], server, *r);
          }
        },
        request);
  }
}

// mg_batch over keys, each on its key's server.
template <class OnReply, class OnMiss>
void mg_keys(Impl& impl, std::span<KeyRead> keys, std::string_view flags, bool quiet,
             std::string_view op, OnReply on_reply, OnMiss on_miss, const Request& request) {
  mg_batch(
      impl, keys.size(), [&](std::size_t i) { return impl.client.server_for(keys[i].key); },
      [&](std::size_t i) { return keys[i].key; }, flags, quiet, op,
      [&](std::size_t i, std::size_t server, const Reply& r) { on_reply(i, server, r); },
      [&](std::size_t i) { on_miss(keys[i]); }, request);
}

// The server a write goes to: the one that granted its lease (its CAS means
// nothing elsewhere), else its key's.
std::size_t server_of_write(Impl& impl, const KeyWrite& w) {
  if (w.lease != nullptr) {
    if (const auto* lease = dynamic_cast<const MetaLease*>(w.lease->lock.get())) {
      // The gutter's lease: the key's own server learns of it from the journal.
      return impl.client.write_at(lease->server_index(), w.key);
    }
  }
  return impl.client.server_for_write(w.key);
}

}  // namespace

MemcachedMetaBackend::MemcachedMetaBackend(std::string_view config)
    : MemcachedMetaBackend(Options{std::string(config)}) {}

MemcachedMetaBackend::MemcachedMetaBackend(Options options)
    : impl_(std::make_shared<Impl>(options)) {}

MemcachedMetaBackend::~MemcachedMetaBackend() {
  // The loops' channels keep what they use while their handlers run (a
  // late reply read and dropped): let go of them, breaking the cycle.
  std::lock_guard lock(impl_->channels_mutex);
  impl_->channels.clear();
}

namespace {
// The channel of `loop` to `server`: the one open, or one opened on an idle
// pooled connection; null if there is none to take.
std::shared_ptr<detail::meta::Channel> channel_for(const std::shared_ptr<Impl>& impl,
                                                   std::size_t server, detail::Loop& loop) {
  const void* const context = loop.context();
  std::lock_guard lock(impl->channels_mutex);
  auto& channels = impl->channels;
  for (auto it = channels.begin(); it != channels.end();) {
    const auto& channel = it->channel;
    if (!channel->usable()) {
      it = channels.erase(it);
      continue;
    }
    if (it->loop == context && it->server == server) return channel;
    ++it;
  }
  detail::wire::Server& s = impl->client.server(server);
  auto connection = s.take_idle();
  if (!connection) return nullptr;
  auto watch = loop.watch(connection->fd());
  if (!watch) {
    s.give_back(std::move(connection));
    return nullptr;
  }
  auto channel = detail::meta::Channel::open(impl, impl->client, server, std::move(connection),
                                             std::move(watch));
  channels.push_back(Impl::LoopChannel{context, server, channel});
  return channel;
}
}  // namespace

bool MemcachedMetaBackend::start_read(KeyRead& key, const LeaseRequest& lease,
                                      const Request& request, const Visit* visit,
                                      detail::Loop& loop,
                                      std::function<void(std::exception_ptr)> done) {
  if (lease.version_only || loop.context() == nullptr || !detail::is_backend_key(key.key))
    return false;
  const std::size_t server = impl_->client.server_for(key.key);
  detail::wire::Server& s = impl_->client.server(server);
  if (s.gutter() || s.down(detail::wire::Steady::now()) || s.journal().size() != 0) return false;
  auto channel = channel_for(impl_, server, loop);
  if (!channel) return false;
  const Ttl lease_ttl = lease.ttl;
  return channel->read(
      key.key, read_flags(lease), request.deadline, request.stop,
      [this, server, &key, &lease, &request, visit, &loop, lease_ttl, done = std::move(done)](
          const Reply* reply, std::exception_ptr error, bool elsewhere) mutable {
        if (elsewhere) {
          // It never reached the server: read where blocking is allowed.
          loop.run_blocking([this, &key, &lease, &request, visit, done = std::move(done)] {
            std::exception_ptr failed;
            try {
              read({&key, 1}, lease, request, visit);
            } catch (...) {
              failed = std::current_exception();
            }
            done(failed);
          });
          return;
        }
        if (error) {
          done(std::move(error));
          return;
        }
        try {
          GiveBack unasked_leases{impl_, {}};
          take_reply(impl_, server, key, *reply, lease_ttl, visit == nullptr, unasked_leases);
          if (visit != nullptr && reply->code == Code::va && !placeholder(*reply)) {
            (*visit)(0, reply->data, reply->flags.value_or(0));
          }
        } catch (...) {
          done(std::current_exception());
          return;
        }
        done(nullptr);
      });
}

// read: `mg k <flags>`, the lease asked in the read (N on a miss, R when the
// time left is below the stale grace); one key alone (the hot path), many
// quiet in one pipeline per server.
void MemcachedMetaBackend::read(std::span<KeyRead> keys, const LeaseRequest& lease,
                                const Request& request, const Visit* visit) {
  if (lease.version_only) {
    // `mg k c`: the CAS alone; a lease the server hands out unasked (an
    // item marked stale) is given back.
    GiveBack unasked_leases{impl_, {}};
    for (KeyRead& key : keys) key.lease = nullptr;
    mg_keys(
        *impl_, keys, "c", keys.size() > 1, keys.size() == 1 ? "revalidate" : "revalidate_multi",
        [&](std::size_t i, std::size_t server, const Reply& r) {
          take_reply(impl_, server, keys[i], r, lease.ttl, false, unasked_leases);
        },
        no_item, request);
    return;
  }
  const std::string& flags = read_flags(lease);
  GiveBack unasked_leases{impl_, {}};
  auto take = [&](std::size_t i, std::size_t server, const Reply& r) {
    take_reply(impl_, server, keys[i], r, lease.ttl, visit == nullptr, unasked_leases);
    if (visit != nullptr && r.code == Code::va && !placeholder(r)) {
      (*visit)(i, r.data, r.flags.value_or(0));
    }
  };
  if (keys.size() == 1) {
    check_backend_key("get", keys[0].key);
    const std::size_t server = impl_->client.server_for(keys[0].key);
    one(
        *impl_, server, "get",
        [&](std::string& out, std::uint32_t opaque) {
          meta::append_mg(out, keys[0].key, flags, opaque);
        },
        [&](const Reply& r) { take(0, server, r); }, request);
    return;
  }
  mg_keys(*impl_, keys, flags, true, "get_multi", take, no_item, request);
}

// write: `ms k <data> T F` and C<cas> (version) or ME (absent); a batch of
// unfenced items quiet (only a failure is answered).
void MemcachedMetaBackend::write(std::span<KeyWrite> items, const Request& request) {
  for (const KeyWrite& w : items) check_backend_key("set", w.key);
  const bool quiet =
      items.size() > 1 && std::all_of(items.begin(), items.end(), [](const KeyWrite& w) {
        return w.fence.kind == Fence::Kind::none && w.lease == nullptr;
      });
  auto& client = impl_->client;
  const std::string_view op = items.size() == 1 ? "set" : "set_multi";
  std::string flags;
  for (const auto& [server, group] : wire::by_server(
           items.size(), [&](std::size_t i) { return server_of_write(*impl_, items[i]); })) {
    std::vector<std::int64_t> expiry(group.size());
    for (std::size_t j = 0; j < group.size(); ++j) {
      expiry[j] = client.exptime(server, items[group[j]].ttl, request);
    }
    // (The FunctionRef refers to the lambda: it must outlive the request.)
    const auto key_of = [&](std::size_t j) { return items[group[j]].key; };
    const wire::Unanswered unanswered{group.size(), key_of};
    run(
        *impl_, server, op, group.size(), quiet,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          const KeyWrite& w = items[group[j]];
          flags.clear();
          // c: the stored item's CAS comes back (a local tier keeps it).
          fmt::format_to(std::back_inserter(flags), "T{} F{} c", expiry[j], w.item->flags);
          switch (w.fence.kind) {
            case Fence::Kind::version:
              fmt::format_to(std::back_inserter(flags), " C{}", w.fence.version);
              break;
            case Fence::Kind::absent:
              flags += " ME";
              break;
            case Fence::Kind::none:
              break;
          }
          if (quiet) flags += " q";
          meta::append_ms(out, w.key, w.item->data, flags, opaque);
        },
        [&](std::size_t j, const Reply* r) {
          KeyWrite& w = items[group[j]];
          if (r == nullptr) {  // quiet: stored
            w.stored = true;
            return;
          }
          const bool error = r->code == Code::client_error || r->code == Code::server_error;
          // Stored, or the lease's item replaced or gone (a store refused as
          // too large deletes the key too): there is nothing to give back.
          const bool over_limit = r->code == Code::server_error && wire::says_too_big(r->message);
          const bool gone = !error || over_limit;
          if (w.lease != nullptr && gone) {
            if (auto* lease = dynamic_cast<MetaLease*>(w.lease->lock.get())) lease->spent();
          }
          if (over_limit) wire::too_big(op, w.key, w.item->data.size(), client.server(server));
          if (r->code != Code::hd &&
              (quiet || (r->code != Code::ex && r->code != Code::nf && r->code != Code::ns))) {
            unexpected(op, w.key, *r);
          }
          w.stored = r->code == Code::hd;
          w.cas = w.stored ? r->cas.value_or(0) : 0;
        },
        request, &unanswered);
  }
}

// erase: `md k`; many quiet (only NF answers).
void MemcachedMetaBackend::erase(std::span<KeyErase> keys, const Request& request) {
  for (const KeyErase& k : keys) check_backend_key("delete", k.key);
  const bool quiet = keys.size() > 1;
  const std::string_view op = quiet ? "delete_multi" : "delete";
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           keys.size(), [&](std::size_t i) { return client.server_for_write(keys[i].key); })) {
    const auto key_of = [&](std::size_t j) { return keys[group[j]].key; };
    const wire::Unanswered unanswered{group.size(), key_of};
    run(
        *impl_, server, op, group.size(), quiet,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          meta::append_md(out, keys[group[j]].key, quiet ? "q" : "", opaque);
        },
        [&](std::size_t j, const Reply* r) {
          KeyErase& k = keys[group[j]];
          if (r != nullptr && r->code != Code::hd && r->code != Code::nf) {
            unexpected(op, k.key, *r);
          }
          k.existed = r == nullptr || r->code == Code::hd;
        },
        request, &unanswered);
  }
}

std::optional<bool> MemcachedMetaBackend::mark_stale(std::string_view key, Ttl keep_for,
                                                     const Request& request) {
  check_backend_key("mark stale", key);
  const std::size_t server = impl_->client.server_for_write(key);
  const std::string flags = fmt::format("I T{}", impl_->client.exptime(server, keep_for, request));
  bool marked = false;
  const auto key_of = [&](std::size_t) { return key; };
  const wire::Unanswered unanswered{1, key_of};
  one(
      *impl_, server, "mark stale",
      [&](std::string& out, std::uint32_t opaque) { meta::append_md(out, key, flags, opaque); },
      [&](const Reply& r) {
        if (r.code != Code::hd && r.code != Code::nf) unexpected("mark stale", key, r);
        marked = r.code == Code::hd;
      },
      request, &unanswered);
  return marked;
}

std::unique_ptr<DistributedLock> MemcachedMetaBackend::make_lock(std::string_view key, Ttl ttl) {
  check_backend_key("lock", key);
  check_backend_key("lock", detail::lock_key_for(key));
  return std::make_unique<MetaLease>(impl_, std::string(key), ttl, LockInfo{});
}

std::optional<ServerTime> MemcachedMetaBackend::server_time(std::string_view key,
                                                            const Request& request) {
  return impl_->client.server_time(key, request);
}

std::optional<FleetStats> MemcachedMetaBackend::fleet_stats() const {
  return impl_->client.fleet_stats();
}

void MemcachedMetaBackend::claim(std::span<KeyRead> keys, const LeaseRequest& lease,
                                 const Request& request) {
  for (const KeyRead& key : keys) check_backend_key("lock", detail::lock_key_for(key.key));
  // R with 30 days wins any value that expires within them (and has no lease
  // out); N any missing key.
  std::vector<std::size_t> without_lease;
  GiveBack unused{impl_, {}};
  mg_keys(
      *impl_, keys, fmt::format("N{} R2592000 v f c t", lock_exptime(lease.ttl)), false, "lock",
      [&](std::size_t i, std::size_t server, const Reply& r) {
        take_reply(impl_, server, keys[i], r, lease.ttl, true, unused);
        const std::int64_t left = r.ttl.value_or(-1);
        if (keys[i].lease->state == LeaseState::free && (left < 0 || left >= 2592000)) {
          without_lease.push_back(i);
        }
      },
      [&](KeyRead&) {}, request);
  // A value that never expires (or not within 30 days) has no lease of its
  // own: the lock item.
  for (std::size_t i : without_lease) {
    KeyRead& key = keys[i];
    key.item.reset();
    key.lease->try_take(
        std::make_unique<MetaLease>(impl_, std::string(key.key), lease.ttl, lease.info), request);
  }
}

void MemcachedMetaBackend::confirm(std::span<KeyRead> keys, const Request& request) {
  GiveBack unasked_leases{impl_, {}};
  // Read where each lease was granted: the store's fence must come from there.
  auto server_of = [&](std::size_t i) {
    if (const auto* lease = dynamic_cast<const MetaLease*>(keys[i].lease->lock.get())) {
      return lease->server_index();
    }
    return impl_->client.server_for(keys[i].key);
  };
  mg_batch(
      *impl_, keys.size(), server_of, [&](std::size_t i) { return keys[i].key; }, "v f c t", true,
      "confirm",
      [&](std::size_t i, std::size_t server, const Reply& r) {
        KeyRead& key = keys[i];
        if (r.code != Code::va) unexpected("confirm", key.key, r);
        unasked_leases.add(unasked(key.key, server, r));
        key.cas = r.cas.value_or(0);
        key.item.reset();
        if (!placeholder(r)) key.item = Item{std::string(r.data), r.flags.value_or(0)};
        key.lease->fence = Fence{Fence::Kind::version, key.cas};
      },
      [&](std::size_t i) {
        KeyRead& key = keys[i];
        key.item.reset();
        key.cas = 0;
        key.lease->fence = Fence{Fence::Kind::absent, 0};
      },
      request);
}

void MemcachedMetaBackend::poll(std::span<KeyRead> keys, const LeaseRequest& lease,
                                const Request& request) {
  LeaseRequest vivify;
  vivify.claim_if_missing = true;
  vivify.ttl = lease.ttl;
  GiveBack unused{impl_, {}};
  mg_keys(
      *impl_, keys, read_flags(vivify), false, "poll",
      [&](std::size_t i, std::size_t server, const Reply& r) {
        take_reply(impl_, server, keys[i], r, lease.ttl, true, unused);
      },
      [&](KeyRead&) {}, request);
}

}  // namespace dogpile
