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
#include "transport/exptime.hpp"
#include "transport/classic/text_batch.hpp"
#include "transport/wire_client.hpp"

namespace dogpile {
namespace {

namespace text = detail::text;
namespace wire = detail::wire;
using detail::check_backend_key;
using detail::lock_exptime;
using TextKind = text::Kind;

constexpr std::string_view kDefaultOptions =
    "--SUPPORT-CAS --VERIFY-KEY --TCP-NODELAY --CONNECT-TIMEOUT=1000 --POLL-TIMEOUT=1000 "
    "--RETRY-TIMEOUT=2 --POOL-MIN=1 --POOL-MAX=64";

// dogpile's defaults, then the caller's options. libmemcached's parser
// refuses leading or trailing white space, so it is trimmed.
std::string with_defaults(std::string_view config) {
  const auto first = config.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return std::string(kDefaultOptions);
  const auto last = config.find_last_not_of(" \t\r\n");
  return fmt::format("{} {}", kDefaultOptions, config.substr(first, last - first + 1));
}

// The options as tokens: --NAME=value or --NAME.
std::vector<std::pair<std::string_view, std::string_view>> tokens(std::string_view options) {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  std::size_t at = 0;
  while ((at = options.find_first_not_of(" \t\r\n", at)) != std::string_view::npos) {
    const std::size_t end = std::min(options.find_first_of(" \t\r\n", at), options.size());
    const std::string_view token = options.substr(at, end - at);
    const auto eq = token.find('=');
    out.emplace_back(token.substr(0, eq),
                     eq == std::string_view::npos ? std::string_view() : token.substr(eq + 1));
    at = end;
  }
  return out;
}

[[noreturn]] void invalid(std::string_view why) {
  throw std::invalid_argument(fmt::format("dogpile::MemcachedBackend: {}", why));
}

// libmemcached's parse of `options`, with what dogpile cannot honour refused.
memcached_st* parse(const std::string& options) {
  memcached_st* mc = memcached(options.data(), options.size());
  if (mc == nullptr) {
    char error[512] = {};
    libmemcached_check_configuration(options.data(), options.size(), error, sizeof error);
    // libmemcached's parser says "syntax error, unexpected UNKNOWN_OPTION":
    // name the option it stumbled on (the first that fails on its own).
    std::string culprit;
    for (std::size_t at = 0; at < options.size() && culprit.empty();) {
      at = options.find_first_not_of(" \t\r\n", at);
      if (at == std::string::npos) break;
      const std::size_t end = std::min(options.find_first_of(" \t\r\n", at), options.size());
      const std::string token = options.substr(at, end - at);
      char ignored[512] = {};
      if (libmemcached_check_configuration(token.data(), token.size(), ignored, sizeof ignored) !=
          MEMCACHED_SUCCESS) {
        culprit = token;
      }
      at = end;
    }
    invalid(culprit.empty()
                ? fmt::format("cannot parse options \"{}\": {}", options, error)
                : fmt::format("option \"{}\" is not one libmemcached knows, or its value is wrong "
                              "(options \"{}\": {})",
                              culprit, options, error));
  }
  struct Rejected {
    memcached_behavior_t behavior;
    const char* option;
    const char* why;
  };
  static constexpr Rejected rejected[] = {
      {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, "--BINARY-PROTOCOL",
       "the lock's compare-and-delete needs the ASCII protocol"},
      {MEMCACHED_BEHAVIOR_USE_UDP, "--USE-UDP", "locks need replies over TCP"},
      {MEMCACHED_BEHAVIOR_NOREPLY, "--NOREPLY", "locks need the server's replies"},
      {MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, "--BUFFER-REQUESTS",
       "locks need each request's reply at once"},
      {MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS, "--NUMBER-OF-REPLICAS",
       "a lock and its value live on one server"},
      {MEMCACHED_BEHAVIOR_RANDOMIZE_REPLICA_READ, "--RANDOMIZE-REPLICA-READ",
       "a lock and its value live on one server"},
  };
  for (const auto& r : rejected) {
    if (memcached_behavior_get(mc, r.behavior) != 0) {
      memcached_free(mc);
      invalid(fmt::format("{} is not supported: {}", r.option, r.why));
    }
  }
  memcached_return_t rc;
  const void* ns = memcached_callback_get(mc, MEMCACHED_CALLBACK_NAMESPACE, &rc);
  if (ns != nullptr && *static_cast<const char*>(ns) != '\0') {
    memcached_free(mc);
    invalid("--NAMESPACE is not supported; use RegionOptions::key_prefix");
  }
  if (memcached_server_count(mc) == 0) {
    memcached_free(mc);
    invalid("the options name no server; add --SERVER=host:port");
  }
  // Ketama, weighted, unless the caller chose a distribution.
  if (options.find("--DISTRIBUTION") == std::string::npos) {
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
  }
  return mc;
}

}  // namespace

struct MemcachedBackend::Impl {
  Impl(std::string opts, const MemcachedBackend::Options& extra)
      : options(std::move(opts)),
        master(parse(options), &memcached_free),
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

  // The version of `lock`'s item if that item is still this holder's
  // (`gets k#L`, on the value's server).
  std::optional<Cas> owned_version(MemcachedLock& lock, std::string_view op);
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
              std::size_t count, text::Retrieval::KeyOf key_of, text::Retrieval::OnValue on_value) {
  text::Retrieval batch(op, command, count, key_of, on_value);
  impl.client.exchange(impl.client.server(server), batch, op);
}

// Runs `count` status-answered commands on `server`.
void command(Classic& impl, std::size_t server, std::string_view op, std::size_t count,
             text::Commands::Write write, text::Commands::OnReply on_reply) {
  text::Commands batch(op, count, write, on_reply);
  impl.client.exchange(impl.client.server(server), batch, op);
}

// One storage command (`set`, `add`, `cas`) of `key`, placed by `placed_by`:
// true if stored, false if not (NOT_STORED, EXISTS, NOT_FOUND).
bool store_one(Classic& impl, std::string_view op, std::string_view verb,
               std::string_view placed_by, std::string_view key, std::string_view data,
               std::uint32_t flags, std::int64_t expires, Cas version = 0) {
  check_backend_key(op, key);
  bool stored = false;
  command(
      impl, impl.client.server_for(placed_by), op, 1,
      [&](std::size_t, std::string& out) {
        text::append_store(out, verb, key, flags, expires, data, version);
      },
      [&](std::size_t, const text::Reply& r) {
        if (r.kind != TextKind::stored && r.kind != TextKind::not_stored &&
            r.kind != TextKind::exists && r.kind != TextKind::not_found) {
          text::refused(fmt::format("memcached {} {}", op, key), r);
        }
        stored = r.kind == TextKind::stored;
      });
  return stored;
}

Item item_of(const text::Reply& r) { return Item{std::string(r.data), r.flags}; }

}  // namespace

std::optional<Cas> MemcachedBackend::Impl::owned_version(MemcachedLock& lock, std::string_view op) {
  std::optional<Cas> version;
  const std::string_view key = lock.lock_key_;
  retrieve(
      *this, client.server_for(lock.value_key_), op, "gets", 1, [&](std::size_t) { return key; },
      [&](std::size_t, const text::Reply& r) {
        const auto item =
            detail::decode_lock_item(r.data, r.flags, detail::key_check(lock.lock_key_));
        if (item && item->token == lock.token_) version = r.cas;
      });
  return version;
}

MemcachedBackend::MemcachedBackend(std::string_view config)
    : MemcachedBackend(Options{std::string(config)}) {}

MemcachedBackend::MemcachedBackend(Options options)
    : impl_(std::make_shared<Impl>(with_defaults(options.config), options)) {}

MemcachedBackend::~MemcachedBackend() = default;

const std::string& MemcachedBackend::options() const noexcept { return impl_->options; }

bool MemcachedBackend::get_view(std::string_view key,
                                detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  check_backend_key("get", key);
  bool found = false;
  retrieve(
      *impl_, impl_->client.server_for(key), "get", "get", 1, [&](std::size_t) { return key; },
      [&](std::size_t, const text::Reply& r) {
        found = true;
        visit(r.data, r.flags);
      });
  return found;
}

std::optional<Item> MemcachedBackend::get(std::string_view key) {
  std::optional<Item> out;
  get_view(key, [&](std::string_view data, std::uint32_t flags) {
    out = Item{std::string(data), flags};
  });
  return out;
}

void MemcachedBackend::set(std::string_view key, const Item& item, Ttl ttl) {
  check_backend_key("set", key);
  const std::int64_t expires = impl_->client.exptime(impl_->client.server_for(key), ttl);
  if (!store_one(*impl_, "set", "set", key, key, item.data, item.flags, expires)) {
    throw BackendError(fmt::format("memcached set {}: not stored", key),
                       impl_->client.server(impl_->client.server_for(key)).name(), "NOT_STORED");
  }
}

bool MemcachedBackend::add(std::string_view key, const Item& item, Ttl ttl) {
  check_backend_key("add", key);
  return store_one(*impl_, "add", "add", key, key, item.data, item.flags,
                   impl_->client.exptime(impl_->client.server_for(key), ttl));
}

bool MemcachedBackend::cas(std::string_view key, const Item& item, Ttl ttl, Cas version) {
  check_backend_key("cas", key);
  return store_one(*impl_, "cas", "cas", key, key, item.data, item.flags,
                   impl_->client.exptime(impl_->client.server_for(key), ttl), version);
}

bool MemcachedBackend::remove(std::string_view key) {
  check_backend_key("delete", key);
  bool removed = false;
  command(
      *impl_, impl_->client.server_for(key), "delete", 1,
      [&](std::size_t, std::string& out) { text::append_delete(out, key); },
      [&](std::size_t, const text::Reply& r) {
        if (r.kind != TextKind::deleted && r.kind != TextKind::not_found) {
          text::refused(fmt::format("memcached delete {}", key), r);
        }
        removed = r.kind == TextKind::deleted;
      });
  return removed;
}

std::vector<std::optional<Item>> MemcachedBackend::get_multi(
    std::span<const std::string_view> keys) {
  for (const std::string_view key : keys) check_backend_key("get_multi", key);
  std::vector<std::optional<Item>> items(keys.size());
  auto& client = impl_->client;
  for (const auto& [server, group] :
       wire::by_server(keys.size(), [&](std::size_t i) { return client.server_for(keys[i]); })) {
    retrieve(
        *impl_, server, "get_multi", "get", group.size(),
        [&](std::size_t j) { return keys[group[j]]; },
        [&](std::size_t j, const text::Reply& r) { items[group[j]] = item_of(r); });
  }
  return items;
}

void MemcachedBackend::set_multi(std::span<const KeyedItem> items, Ttl ttl) {
  for (const KeyedItem& it : items) check_backend_key("set_multi", it.key);
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           items.size(), [&](std::size_t i) { return client.server_for(items[i].key); })) {
    const std::int64_t expires = client.exptime(server, ttl);
    command(
        *impl_, server, "set_multi", group.size(),
        [&](std::size_t j, std::string& out) {
          const KeyedItem& it = items[group[j]];
          text::append_store(out, "set", it.key, it.item->flags, expires, it.item->data);
        },
        [&](std::size_t j, const text::Reply& r) {
          if (r.kind != TextKind::stored) {
            text::refused(fmt::format("memcached set_multi {}", items[group[j]].key), r);
          }
        });
  }
}

void MemcachedBackend::remove_multi(std::span<const std::string_view> keys) {
  for (const std::string_view key : keys) check_backend_key("delete_multi", key);
  auto& client = impl_->client;
  for (const auto& [server, group] :
       wire::by_server(keys.size(), [&](std::size_t i) { return client.server_for(keys[i]); })) {
    command(
        *impl_, server, "delete_multi", group.size(),
        [&](std::size_t j, std::string& out) { text::append_delete(out, keys[group[j]]); },
        [&](std::size_t j, const text::Reply& r) {
          if (r.kind != TextKind::deleted && r.kind != TextKind::not_found) {
            text::refused(fmt::format("memcached delete_multi {}", keys[group[j]]), r);
          }
        });
  }
}

std::unique_ptr<DistributedLock> MemcachedBackend::make_lock(std::string_view key, Ttl ttl) {
  check_backend_key("lock", key);
  check_backend_key("lock", detail::lock_key_for(key));
  return std::unique_ptr<DistributedLock>(
      new MemcachedLock(MemcachedLock::Mapped{}, impl_, std::string(key), ttl, LockInfo{}));
}

std::optional<Item> MemcachedBackend::gets(std::string_view key, Cas& cas) {
  check_backend_key("gets", key);
  std::optional<Item> item;
  cas = 0;
  retrieve(
      *impl_, impl_->client.server_for(key), "gets", "gets", 1, [&](std::size_t) { return key; },
      [&](std::size_t, const text::Reply& r) {
        item = item_of(r);
        cas = r.cas;
      });
  return item;
}

// --- Lease operations ------------------------------------------------------
// read_view: `gets k`; read: `gets k...` (one request per server); claim:
// `add k#L` per key, on the value's server, pipelined per server; confirm
// and poll: `gets k k#L ...`, one per server; store: `add` or `cas` per key,
// pipelined per server; a lock's release: one `cas` with expiration -1
// against the version that confirm saw.

bool MemcachedBackend::read_view(LeaseSlot& slot, const LeaseRequest&,
                                 detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  check_backend_key("get", slot.key);
  slot.lease = LeaseState::unknown;
  slot.cas = 0;
  bool found = false;
  retrieve(
      *impl_, impl_->client.server_for(slot.key), "get", "gets", 1,
      [&](std::size_t) { return slot.key; },
      [&](std::size_t, const text::Reply& r) {
        found = true;
        slot.cas = r.cas;
        visit(r.data, r.flags);
      });
  return found;
}

void MemcachedBackend::read(std::span<LeaseSlot> slots, const LeaseRequest&) {
  for (auto& slot : slots) {
    check_backend_key("get_multi", slot.key);
    slot.item.reset();
    slot.cas = 0;
    slot.lease = LeaseState::unknown;
  }
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           slots.size(), [&](std::size_t i) { return client.server_for(slots[i].key); })) {
    retrieve(
        *impl_, server, "get_multi", "gets", group.size(),
        [&](std::size_t j) { return slots[group[j]].key; },
        [&](std::size_t j, const text::Reply& r) {
          slots[group[j]].item = item_of(r);
          slots[group[j]].cas = r.cas;
        });
  }
}

void MemcachedBackend::claim(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  std::vector<std::unique_ptr<MemcachedLock>> locks;
  locks.reserve(slots.size());
  for (auto& slot : slots) {
    check_backend_key("lock", slot.key);
    check_backend_key("lock", detail::lock_key_for(slot.key));
    locks.emplace_back(new MemcachedLock(MemcachedLock::Mapped{}, impl_, std::string(slot.key),
                                         request.ttl, request.info));
  }
  const std::int64_t expires = lock_exptime(request.ttl);
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           slots.size(), [&](std::size_t i) { return client.server_for(slots[i].key); })) {
    command(
        *impl_, server, "lock", group.size(),
        [&](std::size_t j, std::string& out) {
          MemcachedLock& lock = *locks[group[j]];
          lock.prepare();
          text::append_store(out, "add", lock.lock_key_, detail::kLockFlags, expires, lock.bytes_);
        },
        [&](std::size_t j, const text::Reply& r) {
          LeaseSlot& slot = slots[group[j]];
          if (r.kind == TextKind::stored) {
            auto& lock = locks[group[j]];
            lock->granted_ = true;
            const bool taken = lock->try_lock();
            (void)taken;
            slot.lock = std::move(lock);
            slot.lease = LeaseState::won;
          } else if (r.kind == TextKind::not_stored || r.kind == TextKind::exists) {
            slot.lease = LeaseState::held;
          } else {
            text::refused(fmt::format("memcached lock {}", slot.key), r);
          }
        });
  }
}

// `gets k k#L` for each server's share of `slots`; fills each slot's item and
// version, and calls `lock_seen(slot, lock key, lock item or nullptr, its
// version)`.
template <class LockSeen>
static void read_with_locks(MemcachedBackend::Impl& impl, std::span<LeaseSlot> slots,
                            std::string_view op, LockSeen lock_seen) {
  std::vector<std::string> lock_keys;
  lock_keys.reserve(slots.size());
  for (auto& slot : slots) {
    check_backend_key(op, slot.key);
    lock_keys.push_back(detail::lock_key_for(slot.key));
    check_backend_key(op, lock_keys.back());
    slot.item.reset();
    slot.cas = 0;
  }
  std::vector<std::optional<Item>> locks(slots.size());
  std::vector<Cas> lock_versions(slots.size(), 0);
  auto& client = impl.client;
  for (const auto& [server, group] : wire::by_server(
           slots.size(), [&](std::size_t i) { return client.server_for(slots[i].key); })) {
    retrieve(
        impl, server, op, "gets", group.size() * 2,
        [&](std::size_t k) -> std::string_view {
          const std::size_t i = group[k / 2];
          return k % 2 == 0 ? slots[i].key : std::string_view(lock_keys[i]);
        },
        [&](std::size_t k, const text::Reply& r) {
          const std::size_t i = group[k / 2];
          if (k % 2 == 0) {
            slots[i].item = item_of(r);
            slots[i].cas = r.cas;
          } else {
            locks[i] = item_of(r);
            lock_versions[i] = r.cas;
          }
        });
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    lock_seen(slots[i], lock_keys[i], locks[i] ? &*locks[i] : nullptr, lock_versions[i]);
  }
}

void MemcachedBackend::confirm(std::span<LeaseSlot> slots) {
  read_with_locks(*impl_, slots, "confirm",
                  [](LeaseSlot& slot, const std::string&, const Item* lock, Cas version) {
                    slot.fence = slot.item ? Fence{Fence::Kind::version, slot.cas}
                                           : Fence{Fence::Kind::absent, 0};
                    if (auto* held = dynamic_cast<MemcachedLock*>(slot.lock.get())) {
                      Impl::note_confirmed(*held, lock, version);
                    }
                  });
}

void MemcachedBackend::poll(std::span<LeaseSlot> slots, const LeaseRequest&) {
  read_with_locks(*impl_, slots, "poll",
                  [](LeaseSlot& slot, const std::string& lock_key, const Item* lock, Cas) {
                    if (lock == nullptr) {
                      slot.lease = LeaseState::free;
                      return;
                    }
                    slot.lease = LeaseState::held;
                    slot.holder = {};
                    if (auto info = detail::decode_lock_item(lock->data, lock->flags,
                                                             detail::key_check(lock_key))) {
                      slot.holder = LockInfo{info->started_at, info->expected, info->clock_error};
                    }
                  });
}

void MemcachedBackend::store(std::span<LeaseSlot> slots) {
  std::vector<std::size_t> with_value;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].value == nullptr) continue;
    check_backend_key("set", slots[i].key);
    with_value.push_back(i);
  }
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(with_value.size(), [&](std::size_t i) {
         return client.server_for(slots[with_value[i]].key);
       })) {
    std::vector<std::int64_t> expiry(group.size());
    for (std::size_t j = 0; j < group.size(); ++j) {
      expiry[j] = client.exptime(server, slots[with_value[group[j]]].ttl);
    }
    command(
        *impl_, server, "set", group.size(),
        [&](std::size_t j, std::string& out) {
          const LeaseSlot& slot = slots[with_value[group[j]]];
          const Item& item = *slot.value;
          const std::int64_t expires = expiry[j];
          switch (slot.fence.kind) {
            case Fence::Kind::absent:
              text::append_store(out, "add", slot.key, item.flags, expires, item.data);
              break;
            case Fence::Kind::version:
              text::append_store(out, "cas", slot.key, item.flags, expires, item.data,
                                 slot.fence.version);
              break;
            case Fence::Kind::none:
              text::append_store(out, "set", slot.key, item.flags, expires, item.data);
              break;
          }
        },
        [&](std::size_t j, const text::Reply& r) {
          LeaseSlot& slot = slots[with_value[group[j]]];
          const bool unconditional = slot.fence.kind == Fence::Kind::none;
          if (r.kind == TextKind::stored ||
              (!unconditional && (r.kind == TextKind::not_stored || r.kind == TextKind::exists ||
                                  r.kind == TextKind::not_found))) {
            slot.stored = r.kind == TextKind::stored;
            return;
          }
          text::refused(fmt::format("memcached set {}", slot.key), r);
        });
  }
}

void MemcachedBackend::release(std::span<LeaseSlot> slots) {
  // This backend's locks still held are released in batches; any other lock
  // on its own.
  std::vector<MemcachedLock*> ours;
  for (auto& slot : slots) {
    auto* lock = dynamic_cast<MemcachedLock*>(slot.lock.get());
    if (lock != nullptr && lock->impl_ == impl_ && lock->held_) ours.push_back(lock);
  }
  auto& client = impl_->client;
  auto server_of = [&](std::size_t i) { return client.server_for(ours[i]->value_key_); };
  auto settle = [&] {
    for (auto& slot : slots) {
      if (!slot.lock) continue;
      auto* lock = dynamic_cast<MemcachedLock*>(slot.lock.get());
      if (lock != nullptr && lock->impl_ == impl_ && !lock->settled_) continue;  // not asked
      slot.lost = !slot.lock->release();
    }
  };
  try {
    // The versions confirm did not see (a lock not taken through a claim).
    std::vector<MemcachedLock*> unknown;
    for (MemcachedLock* lock : ours) {
      if (lock->lock_version_ == 0) unknown.push_back(lock);
    }
    for (const auto& [server, group] : wire::by_server(unknown.size(), [&](std::size_t i) {
           return client.server_for(unknown[i]->value_key_);
         })) {
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
          });
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
          });
    }
  } catch (...) {
    settle();  // what was answered is released; the rest stays held
    throw;
  }
  settle();
}

std::optional<ServerTime> MemcachedBackend::server_time(std::string_view key) {
  check_backend_key("stats", key);
  auto& client = impl_->client;
  const std::int64_t seconds = client.stats_time(client.server(client.server_for(key)));
  return ServerTime{TimePoint(std::chrono::seconds(seconds)), std::chrono::seconds(1)};
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

bool MemcachedLock::try_acquire() {
  if (std::exchange(granted_, false)) {  // taken by a claim's add
    held_ = true;
    return true;
  }
  prepare();
  if (!store_one(*impl_, "lock", "add", value_key_, lock_key_, bytes_, detail::kLockFlags,
                 lock_exptime(ttl_))) {
    return false;
  }
  held_ = true;
  return true;
}

bool MemcachedLock::release_acquired() {
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
    const auto owned = impl_->owned_version(*this, "release lock");
    if (!owned) {
      held_ = false;
      return false;
    }
    version = *owned;
  }
  const bool released = store_one(*impl_, "release lock", "cas", value_key_, lock_key_, bytes_,
                                  detail::kLockFlags, -1, version);
  held_ = false;
  lock_version_ = 0;
  return released;
}

bool MemcachedLock::extend() {
  if (!held_) return false;
  if (!impl_->owned_version(*this, "extend lock")) return false;
  // `touch` sets a new time to live and keeps the version (memcached 1.6).
  bool touched = false;
  command(
      *impl_, impl_->client.server_for(value_key_), "extend lock", 1,
      [&](std::size_t, std::string& out) {
        text::append_touch(out, lock_key_, lock_exptime(ttl_));
      },
      [&](std::size_t, const text::Reply& r) {
        if (r.kind != TextKind::touched && r.kind != TextKind::not_found) {
          text::refused(fmt::format("memcached extend lock {}", lock_key_), r);
        }
        touched = r.kind == TextKind::touched;
      });
  return touched;
}

}  // namespace dogpile
