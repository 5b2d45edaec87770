// SPDX-License-Identifier: MIT
// MemcachedBackend: the engine's operations on memcached's classic text
// protocol. libmemcached reads the option string (every option it knows is
// accepted as it would accept it) and, for a distribution other than its
// weighted ketama, says where keys go; the bytes on the wire are read and
// written by the client both transports share (wire_client.cpp), whose time
// and memory are bounded whatever a server sends. libmemcached's own reader
// is not: it allocates the length a VALUE line declares before reading it,
// applies its poll timeout to each read rather than to a request, and (found
// reading libmemcached 1.1.4) writes outside its buffers for a VALUE line
// declaring 2^64-1 bytes or a key over 250 bytes.
#include "dogpile/memcached.hpp"

#include <fmt/format.h>
#include <libmemcached/memcached.h>

#include <algorithm>
#include <charconv>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "format/keys.hpp"
#include "format/lock_item.hpp"
#include "transport/classic/classic_options.hpp"
#include "transport/classic/text_batch.hpp"
#include "transport/exptime.hpp"
#include "transport/wire_client.hpp"

namespace dogpile {
namespace {

namespace text = detail::text;
namespace wire = detail::wire;
using detail::check_backend_key;
using detail::lock_exptime;
using TextKind = text::Kind;
using detail::classic::invalid;
using detail::classic::parse;
using detail::classic::tokens;
using detail::classic::with_defaults;
using detail::classic::without_fleet_options;

}  // namespace

struct MemcachedBackend::Impl {
  Impl(std::string opts, const MemcachedBackend::Options& extra)
      : options(std::move(opts)),
        master(parse(without_fleet_options(options)), &memcached_free),
        client(config(extra), extra.auto_eject, placement(extra)) {}

  wire::Config config(const MemcachedBackend::Options& extra) {
    if (extra.failure_limit == 0) invalid("failure_limit must be at least 1");
    wire::Config c;
    for (const auto& [name, value] : tokens(options)) {
      const std::string option =
          value.empty() ? std::string(name) : fmt::format("{}={}", name, value);
      try {
        if (name == "--SERVER") {
          c.servers.push_back(wire::parse_server(option, value, value.starts_with('/')));
        } else if (name == "--SOCKET") {
          c.servers.push_back(wire::parse_server(option, value, true));
        } else if (wire::fleet_option(option, name, value, c)) {
        } else if (name == "--POOL-MAX") {
          std::size_t n = 0;
          std::from_chars(value.data(), value.data() + value.size(), n);
          c.pool_max = std::max<std::size_t>(1, n);
        }
      } catch (const std::invalid_argument& e) {
        invalid(e.what());
      }
    }
    if (c.servers.size() != memcached_server_count(master.get())) {
      invalid(
          fmt::format("options \"{}\" name {} servers as libmemcached reads them, {} as "
                      "dogpile does: write one --SERVER=host[:port][/?weight] for each",
                      options, memcached_server_count(master.get()), c.servers.size()));
    }
    auto behavior = [&](memcached_behavior_t b) { return memcached_behavior_get(master.get(), b); };
    c.connect_timeout = std::chrono::milliseconds(behavior(MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT));
    c.poll_timeout = std::chrono::milliseconds(behavior(MEMCACHED_BEHAVIOR_POLL_TIMEOUT));
    c.retry_timeout = std::chrono::seconds(
        std::max<std::uint64_t>(1, behavior(MEMCACHED_BEHAVIOR_RETRY_TIMEOUT)));
    c.keepalive = behavior(MEMCACHED_BEHAVIOR_TCP_KEEPALIVE) != 0;
    c.failure_limit = extra.failure_limit;
    c.max_item_size = extra.max_item_size;
    return c;
  }

  // Keys go where libmemcached's weighted ketama puts them (the shared ring
  // computes the same); any other distribution or hash is libmemcached's to
  // compute, on the parsed (never connected) configuration.
  std::function<std::size_t(std::string_view)> placement(const MemcachedBackend::Options& extra) {
    if (options.find("--DISTRIBUTION") == std::string::npos &&
        options.find("--HASH") == std::string::npos &&
        options.find("--KETAMA") == std::string::npos) {
      return nullptr;
    }
    if (extra.auto_eject) {
      invalid(
          "auto_eject moves keys on the default (weighted ketama) distribution only; "
          "leave out --DISTRIBUTION and --HASH");
    }
    const std::uint32_t n = memcached_server_count(master.get());
    std::unordered_map<std::string, std::size_t> index;
    std::size_t i = 0;
    for (const auto& [name, value] : tokens(options)) {
      if (name != "--SERVER" && name != "--SOCKET") continue;
      const detail::RingServer s =
          wire::parse_server(name, value, name == "--SOCKET" || value.starts_with('/'));
      index.emplace(fmt::format("{}:{}", s.host, s.port), i++);
    }
    positions.resize(n);
    for (std::uint32_t p = 0; p < n; ++p) {
      const auto* instance = memcached_server_instance_by_position(master.get(), p);
      const auto it = index.find(
          fmt::format("{}:{}", memcached_server_name(instance), memcached_server_port(instance)));
      if (it == index.end()) invalid("a server libmemcached lists is not one of the options'");
      positions[p] = it->second;
    }
    return [this](std::string_view key) {
      std::lock_guard lock(place_mutex);
      return positions[memcached_generate_hash(master.get(), key.data(), key.size())];
    };
  }

  // Where a read of `key` goes: where its lock was taken, if this process
  // holds one, else where its key goes now.
  std::size_t read_server(const KeyRead& key) {
    if (key.lease != nullptr) {
      const auto* lock = dynamic_cast<const MemcachedLock*>(key.lease->lock.get());
      if (lock != nullptr && lock->server_ != MemcachedLock::kNoServer) return lock->server_;
    }
    return client.server_for(key.key);
  }

  // Where `lock` was taken (else where its key goes now).
  std::size_t lock_server(const MemcachedLock& lock) {
    return lock.server_ != MemcachedLock::kNoServer ? lock.server_
                                                    : client.server_for(lock.value_key_);
  }

  // The version of `lock`'s item if that item is still this holder's
  // (`gets k#L`, on the value's server).
  std::optional<Cas> owned_version(MemcachedLock& lock, std::string_view op,
                                   const Request& request);
  // After confirm read `lock`'s item (or found none): remembers its version,
  // if it is this holder's, so that the release is one `cas`.
  static void note_confirmed(MemcachedLock& lock, const Item* item, Cas version) {
    const auto held = item != nullptr ? detail::decode_lock_item(item->data, item->flags,
                                                                 detail::key_check(lock.lock_key_))
                                      : std::nullopt;
    lock.lock_version_ = held && held->token == lock.token_ ? version : 0;
  }

  const std::string options;
  std::unique_ptr<memcached_st, decltype(&memcached_free)> master;
  std::mutex place_mutex;
  std::vector<std::size_t> positions;  // libmemcached's server position -> the client's
  wire::Client client;
};

namespace {

using Classic = MemcachedBackend::Impl;

// Retrieves `count` keys (`key_of(i)`, all on `server`) with `command`.
void retrieve(Classic& impl, std::size_t server, std::string_view op, std::string_view command,
              std::size_t count, text::Retrieval::KeyOf key_of, text::Retrieval::OnValue on_value,
              const Request& request) {
  text::Retrieval batch(op, command, count, key_of, on_value);
  impl.client.exchange(impl.client.server(server), batch, op, request);
}

// Runs `count` status-answered commands on `server`.
void command(Classic& impl, std::size_t server, std::string_view op, std::size_t count,
             text::Commands::Write write, text::Commands::OnReply on_reply, const Request& request,
             const wire::Unanswered* unanswered = nullptr) {
  text::Commands batch(op, count, write, on_reply);
  impl.client.exchange(impl.client.server(server), batch, op, request, unanswered);
}

// One storage command (`set`, `add`, `cas`) of `key`, on `server`:
// true if stored, false if not (NOT_STORED, EXISTS, NOT_FOUND).
bool store_one(Classic& impl, std::string_view op, std::string_view verb, std::size_t server,
               std::string_view key, std::string_view data, std::uint32_t flags,
               std::int64_t expires, Cas version, const Request& request) {
  check_backend_key(op, key);
  bool stored = false;
  command(
      impl, server, op, 1,
      [&](std::size_t, std::string& out) {
        text::append_store(out, verb, key, flags, expires, data, version);
      },
      [&](std::size_t, const text::Reply& r) {
        if (r.kind != TextKind::stored && r.kind != TextKind::not_stored &&
            r.kind != TextKind::exists && r.kind != TextKind::not_found) {
          text::refused(fmt::format("memcached {} {}", op, key), r);
        }
        stored = r.kind == TextKind::stored;
      },
      request);
  return stored;
}

Item item_of(const text::Reply& r) { return Item{std::string(r.data), r.flags}; }

}  // namespace

std::optional<Cas> MemcachedBackend::Impl::owned_version(MemcachedLock& lock, std::string_view op,
                                                         const Request& request) {
  std::optional<Cas> version;
  const std::string_view key = lock.lock_key_;
  retrieve(
      *this, lock_server(lock), op, "gets", 1, [&](std::size_t) { return key; },
      [&](std::size_t, const text::Reply& r) {
        const auto item =
            detail::decode_lock_item(r.data, r.flags, detail::key_check(lock.lock_key_));
        if (item && item->token == lock.token_) version = r.cas;
      },
      request);
  return version;
}

MemcachedBackend::MemcachedBackend(std::string_view config)
    : MemcachedBackend(Options{std::string(config)}) {}

MemcachedBackend::MemcachedBackend(Options options)
    : impl_(std::make_shared<Impl>(with_defaults(options.config), options)) {}

MemcachedBackend::~MemcachedBackend() = default;

const std::string& MemcachedBackend::options() const noexcept { return impl_->options; }

// --- The operations ------------------------------------------------------
// read: `gets k...` (one request per server); write: `set`, `add` or `cas`
// per key, pipelined per server; erase: `delete` per key, pipelined; claim:
// `add k#L` per key, on the value's server, pipelined per server; confirm
// and poll: `gets k k#L ...`, one per server; a lock's release: one `cas`
// with expiration -1 against the version that confirm saw.

void MemcachedBackend::read(std::span<KeyRead> keys, const LeaseRequest&, const Request& request,
                            const Visit* visit) {
  const std::string_view op = keys.size() == 1 ? "get" : "get_multi";
  for (auto& key : keys) {
    check_backend_key(op, key.key);
    key.item.reset();
    key.cas = 0;
    key.marked_stale = false;
    if (key.lease != nullptr) key.lease->state = LeaseState::unknown;
  }
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           keys.size(), [&](std::size_t i) { return client.server_for(keys[i].key); })) {
    retrieve(
        *impl_, server, op, "gets", group.size(), [&](std::size_t j) { return keys[group[j]].key; },
        [&](std::size_t j, const text::Reply& r) {
          KeyRead& key = keys[group[j]];
          key.cas = r.cas;
          if (visit != nullptr) {
            (*visit)(group[j], r.data, r.flags);
          } else {
            key.item = item_of(r);
          }
        },
        request);
  }
}

void MemcachedBackend::write(std::span<KeyWrite> items, const Request& request) {
  const std::string_view op = items.size() == 1 ? "set" : "set_multi";
  for (const KeyWrite& w : items) check_backend_key(op, w.key);
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(items.size(), [&](std::size_t i) {
         // A creation's store goes where its lock was taken (the fence
         // it carries was read there).
         if (items[i].lease != nullptr) {
           const auto* lock = dynamic_cast<const MemcachedLock*>(items[i].lease->lock.get());
           if (lock != nullptr && lock->server_ != MemcachedLock::kNoServer) {
             return client.write_at(lock->server_, items[i].key);
           }
         }
         return client.server_for_write(items[i].key);
       })) {
    // (The FunctionRef refers to the lambda: it must outlive the request.)
    const auto key_of = [&](std::size_t j) { return items[group[j]].key; };
    const wire::Unanswered unanswered{group.size(), key_of};
    std::vector<std::int64_t> expiry(group.size());
    for (std::size_t j = 0; j < group.size(); ++j) {
      expiry[j] = client.exptime(server, items[group[j]].ttl, request);
    }
    command(
        *impl_, server, op, group.size(),
        [&](std::size_t j, std::string& out) {
          const KeyWrite& w = items[group[j]];
          const Item& item = *w.item;
          switch (w.fence.kind) {
            case Fence::Kind::absent:
              text::append_store(out, "add", w.key, item.flags, expiry[j], item.data);
              break;
            case Fence::Kind::version:
              text::append_store(out, "cas", w.key, item.flags, expiry[j], item.data,
                                 w.fence.version);
              break;
            case Fence::Kind::none:
              text::append_store(out, "set", w.key, item.flags, expiry[j], item.data);
              break;
          }
        },
        [&](std::size_t j, const text::Reply& r) {
          KeyWrite& w = items[group[j]];
          const bool unconditional = w.fence.kind == Fence::Kind::none;
          if (r.kind == TextKind::stored ||
              (!unconditional && (r.kind == TextKind::not_stored || r.kind == TextKind::exists ||
                                  r.kind == TextKind::not_found))) {
            w.stored = r.kind == TextKind::stored;
            return;
          }
          if (r.kind == TextKind::server_error && wire::says_too_big(r.message)) {
            wire::too_big(op, w.key, w.item->data.size(), client.server(server));
          }
          text::refused(fmt::format("memcached {} {}", op, w.key), r);
        },
        request, &unanswered);
  }
}

void MemcachedBackend::erase(std::span<KeyErase> keys, const Request& request) {
  const std::string_view op = keys.size() == 1 ? "delete" : "delete_multi";
  for (const KeyErase& k : keys) check_backend_key(op, k.key);
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           keys.size(), [&](std::size_t i) { return client.server_for_write(keys[i].key); })) {
    const auto key_of = [&](std::size_t j) { return keys[group[j]].key; };
    const wire::Unanswered unanswered{group.size(), key_of};
    command(
        *impl_, server, op, group.size(),
        [&](std::size_t j, std::string& out) { text::append_delete(out, keys[group[j]].key); },
        [&](std::size_t j, const text::Reply& r) {
          KeyErase& k = keys[group[j]];
          if (r.kind != TextKind::deleted && r.kind != TextKind::not_found) {
            text::refused(fmt::format("memcached {} {}", op, k.key), r);
          }
          k.existed = r.kind == TextKind::deleted;
        },
        request, &unanswered);
  }
}

std::unique_ptr<DistributedLock> MemcachedBackend::make_lock(std::string_view key, Ttl ttl) {
  check_backend_key("lock", key);
  check_backend_key("lock", detail::lock_key_for(key));
  return std::unique_ptr<DistributedLock>(
      new MemcachedLock(MemcachedLock::Mapped{}, impl_, std::string(key), ttl, LockInfo{}));
}

// The classic protocol marks nothing stale in place: the region rewrites the
// value (gets, then cas). While the key's server is away and its requests go
// to the gutter, the value may not be there and the server must still learn
// of the invalidation: the key is removed instead (on the gutter now, and on
// its server, from the journal, when it answers).
std::optional<bool> MemcachedBackend::mark_stale(std::string_view key, Ttl,
                                                 const Request& request) {
  check_backend_key("mark stale", key);
  if (!impl_->client.in_gutter(key)) return std::nullopt;
  KeyErase erased{key};
  erase({&erased, 1}, request);
  return false;
}

std::optional<FleetStats> MemcachedBackend::fleet_stats() const {
  return impl_->client.fleet_stats();
}

void MemcachedBackend::claim(std::span<KeyRead> keys, const LeaseRequest& lease,
                             const Request& request) {
  std::vector<std::unique_ptr<MemcachedLock>> locks;
  locks.reserve(keys.size());
  for (auto& key : keys) {
    check_backend_key("lock", key.key);
    check_backend_key("lock", detail::lock_key_for(key.key));
    locks.emplace_back(new MemcachedLock(MemcachedLock::Mapped{}, impl_, std::string(key.key),
                                         lease.ttl, lease.info));
    key.lease->read_with = false;
  }
  const std::int64_t expires = lock_exptime(lease.ttl);
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           keys.size(), [&](std::size_t i) { return client.server_for(keys[i].key); })) {
    command(
        *impl_, server, "lock", group.size(),
        [&](std::size_t j, std::string& out) {
          MemcachedLock& lock = *locks[group[j]];
          lock.prepare();
          text::append_store(out, "add", lock.lock_key_, detail::kLockFlags, expires, lock.bytes_);
        },
        [&](std::size_t j, const text::Reply& r) {
          KeyRead& key = keys[group[j]];
          if (r.kind == TextKind::stored) {
            auto& lock = locks[group[j]];
            lock->granted_ = true;
            lock->server_ = server;
            const bool taken = lock->try_lock();
            (void)taken;
            key.lease->lock = std::move(lock);
            key.lease->state = LeaseState::won;
          } else if (r.kind == TextKind::not_stored || r.kind == TextKind::exists) {
            key.lease->state = LeaseState::held;
          } else {
            text::refused(fmt::format("memcached lock {}", key.key), r);
          }
        },
        request);
  }
}

// `gets k k#L` for each server's share of `keys`; fills each key's item and
// version, and calls `lock_seen(key, lock key, lock item or nullptr, its
// version)`.
template <class LockSeen>
static void read_with_locks(MemcachedBackend::Impl& impl, std::span<KeyRead> keys,
                            std::string_view op, LockSeen lock_seen, const Request& request) {
  // A key whose lock this process holds is read where the lock was taken.
  auto server_of = [&](std::size_t i) { return impl.read_server(keys[i]); };
  std::vector<std::string> lock_keys;
  lock_keys.reserve(keys.size());
  for (auto& key : keys) {
    check_backend_key(op, key.key);
    lock_keys.push_back(detail::lock_key_for(key.key));
    check_backend_key(op, lock_keys.back());
    key.item.reset();
    key.cas = 0;
  }
  std::vector<std::optional<Item>> locks(keys.size());
  std::vector<Cas> lock_versions(keys.size(), 0);
  for (const auto& [server, group] : wire::by_server(keys.size(), server_of)) {
    retrieve(
        impl, server, op, "gets", group.size() * 2,
        [&](std::size_t k) -> std::string_view {
          const std::size_t i = group[k / 2];
          return k % 2 == 0 ? keys[i].key : std::string_view(lock_keys[i]);
        },
        [&](std::size_t k, const text::Reply& r) {
          const std::size_t i = group[k / 2];
          if (k % 2 == 0) {
            keys[i].item = item_of(r);
            keys[i].cas = r.cas;
          } else {
            locks[i] = item_of(r);
            lock_versions[i] = r.cas;
          }
        },
        request);
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    lock_seen(keys[i], lock_keys[i], locks[i] ? &*locks[i] : nullptr, lock_versions[i]);
  }
}

void MemcachedBackend::confirm(std::span<KeyRead> keys, const Request& request) {
  read_with_locks(
      *impl_, keys, "confirm",
      [](KeyRead& key, const std::string&, const Item* lock, Cas version) {
        key.lease->fence =
            key.item ? Fence{Fence::Kind::version, key.cas} : Fence{Fence::Kind::absent, 0};
        if (auto* held = dynamic_cast<MemcachedLock*>(key.lease->lock.get())) {
          Impl::note_confirmed(*held, lock, version);
        }
      },
      request);
}

void MemcachedBackend::poll(std::span<KeyRead> keys, const LeaseRequest&, const Request& request) {
  read_with_locks(
      *impl_, keys, "poll",
      [](KeyRead& key, const std::string& lock_key, const Item* lock, Cas) {
        Lease& lease = *key.lease;
        lease.read_with = false;
        if (lock == nullptr) {
          lease.state = LeaseState::free;
          return;
        }
        lease.state = LeaseState::held;
        lease.holder = {};
        if (auto info =
                detail::decode_lock_item(lock->data, lock->flags, detail::key_check(lock_key))) {
          lease.holder = LockInfo{info->started_at, info->expected, info->clock_error};
        }
      },
      request);
}

void MemcachedBackend::release(std::span<LeaseEnd> leases, const Request& request) {
  // This backend's locks still held are released in batches; any other lock
  // on its own.
  std::vector<MemcachedLock*> ours;
  for (auto& end : leases) {
    if (end.lease == nullptr) continue;
    auto* lock = dynamic_cast<MemcachedLock*>(end.lease->lock.get());
    if (lock != nullptr && lock->impl_ == impl_ && lock->held_) ours.push_back(lock);
  }
  auto server_of = [&](std::size_t i) { return impl_->lock_server(*ours[i]); };
  auto settle = [&] {
    for (auto& end : leases) {
      if (end.lease == nullptr || !end.lease->lock) continue;
      auto* lock = dynamic_cast<MemcachedLock*>(end.lease->lock.get());
      if (lock != nullptr && lock->impl_ == impl_ && !lock->settled_) continue;  // not asked
      end.lost = !end.lease->lock->release(request);
    }
  };
  try {
    // The versions confirm did not see (a lock not taken through a claim).
    std::vector<MemcachedLock*> unknown;
    for (MemcachedLock* lock : ours) {
      if (lock->lock_version_ == 0) unknown.push_back(lock);
    }
    for (const auto& [server, group] : wire::by_server(
             unknown.size(), [&](std::size_t i) { return impl_->lock_server(*unknown[i]); })) {
      for (std::size_t i : group) unknown[i]->settled_ = false;  // not ours, unless seen
      retrieve(
          *impl_, server, "release lock", "gets", group.size(),
          [&](std::size_t j) { return std::string_view(unknown[group[j]]->lock_key_); },
          [&](std::size_t j, const text::Reply& r) {
            MemcachedLock& lock = *unknown[group[j]];
            const auto item =
                detail::decode_lock_item(r.data, r.flags, detail::key_check(lock.lock_key_));
            if (item && item->token == lock.token_) {
              lock.lock_version_ = r.cas;
              lock.settled_.reset();
            }
          },
          request);
    }
    for (const auto& [server, group] : wire::by_server(ours.size(), server_of)) {
      std::vector<MemcachedLock*> asked;
      for (std::size_t i : group) {
        if (!ours[i]->settled_) asked.push_back(ours[i]);
      }
      command(
          *impl_, server, "release lock", asked.size(),
          [&](std::size_t j, std::string& out) {
            const MemcachedLock& lock = *asked[j];
            text::append_store(out, "cas", lock.lock_key_, detail::kLockFlags, -1, lock.bytes_,
                               lock.lock_version_);
          },
          [&](std::size_t j, const text::Reply& r) {
            if (r.kind != TextKind::stored && r.kind != TextKind::exists &&
                r.kind != TextKind::not_found) {
              text::refused(fmt::format("memcached release lock {}", asked[j]->lock_key_), r);
            }
            asked[j]->settled_ = r.kind == TextKind::stored;
          },
          request);
    }
  } catch (...) {
    settle();  // what was answered is released; the rest stays held
    throw;
  }
  settle();
}

std::optional<ServerTime> MemcachedBackend::server_time(std::string_view key,
                                                        const Request& request) {
  return impl_->client.server_time(key, request);
}

// --- MemcachedLock -----------------------------------------------------------

MemcachedLock::MemcachedLock(MemcachedBackend& backend, std::string_view key, Ttl ttl)
    : MemcachedLock(Mapped{}, backend.impl_, detail::map_key("", key), ttl, LockInfo{}) {}

MemcachedLock::MemcachedLock(Mapped, std::shared_ptr<MemcachedBackend::Impl> impl,
                             std::string value_key, Ttl ttl, LockInfo info)
    : impl_(std::move(impl)),
      value_key_(std::move(value_key)),
      lock_key_(detail::lock_key_for(value_key_)),
      ttl_(ttl),
      info_(info) {}

MemcachedLock::~MemcachedLock() { release_if_held(); }

void MemcachedLock::prepare() {
  const auto item =
      detail::new_lock_item(lock_key_, info_.started_at, info_.expected, info_.clock_error);
  bytes_ = detail::encode_lock_item(item);
  token_ = item.token;
  lock_version_ = 0;
}

bool MemcachedLock::try_acquire(const Request& request) {
  if (std::exchange(granted_, false)) {  // taken by a claim's add
    held_ = true;
    return true;
  }
  prepare();
  const std::size_t server = impl_->client.server_for(value_key_);
  if (!store_one(*impl_, "lock", "add", server, lock_key_, bytes_, detail::kLockFlags,
                 lock_exptime(ttl_), 0, request)) {
    return false;
  }
  server_ = server;
  held_ = true;
  return true;
}

bool MemcachedLock::release_acquired(const Request& request) {
  if (settled_) {  // a batch asked already
    const bool released = *std::exchange(settled_, std::nullopt);
    held_ = false;
    lock_version_ = 0;
    return released;
  }
  if (!held_) return false;
  // A request that throws leaves the lock held here: it may be tried again.
  // One `cas` when the lock's version is known (extensions touch, which
  // keeps it): it fails only if the lock expired or was taken over.
  Cas version = lock_version_;
  if (version == 0) {
    const auto owned = impl_->owned_version(*this, "release lock", request);
    if (!owned) {
      held_ = false;
      return false;
    }
    version = *owned;
  }
  const bool released = store_one(*impl_, "release lock", "cas", impl_->lock_server(*this),
                                  lock_key_, bytes_, detail::kLockFlags, -1, version, request);
  held_ = false;
  lock_version_ = 0;
  return released;
}

bool MemcachedLock::extend(const Request& request) {
  if (!held_) return false;
  if (!impl_->owned_version(*this, "extend lock", request)) return false;
  // `touch` sets a new time to live and keeps the version (memcached 1.6).
  bool touched = false;
  command(
      *impl_, impl_->lock_server(*this), "extend lock", 1,
      [&](std::size_t, std::string& out) {
        text::append_touch(out, lock_key_, lock_exptime(ttl_));
      },
      [&](std::size_t, const text::Reply& r) {
        if (r.kind != TextKind::touched && r.kind != TextKind::not_found) {
          text::refused(fmt::format("memcached extend lock {}", lock_key_), r);
        }
        touched = r.kind == TextKind::touched;
      },
      request);
  return touched;
}

}  // namespace dogpile
