// MemcachedMetaBackend: the engine's operations on memcached's meta commands.
// The client (connections, health, placement) is meta_client.cpp; the
// protocol's text is meta_protocol.cpp.
#include "dogpile/memcached_meta.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <iterator>
#include <utility>

#include "dogpile/detail/keys.hpp"
#include "dogpile/detail/lock_item.hpp"
#include "meta_client.hpp"

namespace dogpile {

namespace meta = detail::meta;
using meta::Code;
using meta::Reply;

struct MemcachedMetaBackend::Impl {
  explicit Impl(Options options)
      : client(meta::parse_options(options.config), options.auto_eject) {}
  meta::Client client;
};

namespace {

// memcached reads an expiration above 30 days as an absolute Unix time.
constexpr Ttl kMaxRelativeExpiration = std::chrono::hours(24 * 30);

std::int64_t exptime(Ttl ttl) {
  if (ttl <= Ttl::zero()) return 0;
  if (ttl > kMaxRelativeExpiration) return std::time(nullptr) + ttl.count();
  return ttl.count();
}

void check_key(std::string_view op, std::string_view key) {
  if (!meta::valid_key(key)) {
    throw BackendError(fmt::format(
        "memcached {} of key \"{}\": not a valid memcached key (1 to 250 bytes, no spaces or "
        "control characters)",
        op, key.substr(0, 64)));
  }
}

[[noreturn]] void unexpected(std::string_view op, std::string_view key, const Reply& reply) {
  switch (reply.code) {
    case Code::client_error:
      throw BackendError(fmt::format("memcached {} of key {}: CLIENT_ERROR {}", op, key,
                                     reply.message));
    case Code::server_error:
      throw BackendError(fmt::format("memcached {} of key {}: SERVER_ERROR {}", op, key,
                                     reply.message));
    default:
      throw BackendError(fmt::format("memcached {} of key {}: unexpected reply", op, key));
  }
}

// An empty item with no flags: a lease placeholder (made by `N` on a miss),
// not a value.
bool placeholder(const Reply& reply) noexcept {
  return reply.data.empty() && reply.flags.value_or(0) == 0;
}

// Appends " O<i>"-style batch markers: replies to a pipeline are matched by
// opaque and key, and a reply that names another request is refused.
std::string marker(std::size_t i) { return fmt::format("k O{}", i); }

std::size_t matched(const Reply& reply, std::span<const std::string_view> keys,
                    std::string_view op) {
  std::size_t i = 0;
  const auto [end, ec] =
      std::from_chars(reply.opaque.data(), reply.opaque.data() + reply.opaque.size(), i);
  if (ec != std::errc() || end != reply.opaque.data() + reply.opaque.size() || i >= keys.size() ||
      reply.key != keys[i]) {
    if (reply.code == Code::client_error || reply.code == Code::server_error) {
      unexpected(op, keys.front(), reply);
    }
    throw BackendError(fmt::format(
        "memcached {}: a reply that matches no request (opaque \"{}\", key \"{}\"): the "
        "connection is out of step",
        op, reply.opaque.substr(0, 32), reply.key.substr(0, 64)));
  }
  return i;
}

// The requests of a batch grouped by server: (server index, slot indices).
template <class KeyOf>
std::vector<std::pair<std::size_t, std::vector<std::size_t>>> by_server(meta::Client& client,
                                                                        std::size_t n,
                                                                        KeyOf key_of) {
  std::vector<std::pair<std::size_t, std::vector<std::size_t>>> groups;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t server = client.server_for(key_of(i));
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == server; });
    if (it == groups.end()) {
      groups.emplace_back(server, std::vector<std::size_t>{});
      it = std::prev(groups.end());
    }
    it->second.push_back(i);
  }
  return groups;
}

}  // namespace

// ---------------------------------------------------------------------------
// MetaLease: a lease the server granted, or a lock item

namespace detail {

class MetaLease final : public DistributedLock {
 public:
  enum class Kind : std::uint8_t {
    placeholder,  // W on a miss: the server's empty item, deleted to give it back
    refresh,      // W on a value whose time ran low: an empty append gives it back
    marked,       // W on a value marked stale: marked again to give it back
    lock_item,    // k#L, added (a value that never expires has no lease of its own)
  };

  // A lease granted by the server: held from the start.
  MetaLease(std::shared_ptr<MemcachedMetaBackend::Impl> impl, std::string key, Kind kind,
            Cas cas, Ttl ttl)
      : impl_(std::move(impl)), key_(std::move(key)), kind_(kind), cas_(cas), ttl_(ttl) {
    granted_ = true;
    const bool taken = try_lock();
    (void)taken;
  }
  // A lock item, not taken yet.
  MetaLease(std::shared_ptr<MemcachedMetaBackend::Impl> impl, std::string value_key, Ttl ttl,
            LockInfo info)
      : impl_(std::move(impl)),
        key_(lock_key_for(value_key)),
        value_key_(std::move(value_key)),
        kind_(Kind::lock_item),
        ttl_(ttl),
        info_(info) {}
  ~MetaLease() override { release_if_held(); }

  bool extend() override;
  [[nodiscard]] Ttl ttl() const noexcept override { return ttl_; }

  // The value was stored over the lease (or the store found it gone): there
  // is nothing to give back.
  void spent() noexcept {
    if (kind_ != Kind::lock_item) spent_ = true;
  }
  [[nodiscard]] Kind kind() const noexcept { return kind_; }

 protected:
  bool try_acquire() override;
  bool release_acquired() override;

 private:
  meta::Server& server() {
    return impl_->client.server(
        impl_->client.server_for(kind_ == Kind::lock_item ? value_key_ : key_));
  }
  // One request with one reply; returns its code and, for mg, its CAS.
  std::pair<Code, Cas> ask(std::string_view request, std::string_view op) {
    std::pair<Code, Cas> out{Code::error, 0};
    impl_->client.exchange(
        server(), request, 1,
        [&](const Reply& r) {
          if (r.code == Code::client_error || r.code == Code::server_error) {
            unexpected(op, key_, r);
          }
          out = {r.code, r.cas.value_or(0)};
        },
        op);
    return out;
  }

  std::shared_ptr<MemcachedMetaBackend::Impl> impl_;
  std::string key_;        // the item that is the lease
  std::string value_key_;  // lock_item: places it on the value's server
  Kind kind_;
  Cas cas_ = 0;
  Ttl ttl_;
  LockInfo info_;
  bool granted_ = false;
  bool spent_ = false;
};

bool MetaLease::try_acquire() {
  if (std::exchange(granted_, false)) return true;
  if (kind_ != Kind::lock_item) return false;  // a lease given back is gone
  const auto item = new_lock_item(key_, info_.started_at, info_.expected, info_.clock_error);
  std::string request;
  meta::append_ms(request, key_, encode_lock_item(item),
                  fmt::format("T{} F{} ME c", exptime(ttl_), kLockFlags));
  const auto [code, cas] = ask(request, "lock");
  if (code != Code::hd) {
    if (code == Code::ns) return false;
    throw BackendError(fmt::format("memcached lock of key {}: unexpected reply", key_));
  }
  cas_ = cas;
  spent_ = false;
  return true;
}

bool MetaLease::release_acquired() {
  if (std::exchange(spent_, false)) return true;
  std::string request;
  switch (kind_) {
    case Kind::placeholder:
    case Kind::lock_item:
      meta::append_md(request, key_, fmt::format("C{}", cas_));
      break;
    case Kind::refresh:
      meta::append_ms(request, key_, "", fmt::format("MA C{}", cas_));
      break;
    case Kind::marked:
      meta::append_md(request, key_, fmt::format("I C{}", cas_));
      break;
  }
  return ask(request, "release lease").first == Code::hd;
}

bool MetaLease::extend() {
  // Still ours (a touch keeps the CAS, so the fence stays valid)? Then touch.
  std::string check;
  meta::append_mg(check, key_, "c t");
  std::int64_t left = 0;
  bool ours = false;
  impl_->client.exchange(
      server(), check, 1,
      [&](const Reply& r) {
        if (r.code == Code::client_error || r.code == Code::server_error) {
          unexpected("extend lease", key_, r);
        }
        ours = (r.code == Code::hd || r.code == Code::va) && r.cas.value_or(0) == cas_;
        left = r.ttl.value_or(0);
      },
      "extend lease");
  if (!ours) return false;
  // A value being refreshed keeps the longer of its own time and the lease's.
  const std::int64_t ttl = left < 0 ? 0 : std::max<std::int64_t>(exptime(ttl_), left);
  std::string touch;
  meta::append_mg(touch, key_, fmt::format("T{} c", ttl));
  const auto [code, cas] = ask(touch, "extend lease");
  return (code == Code::hd || code == Code::va) && cas == cas_;
}

}  // namespace detail

using detail::MetaLease;

// ---------------------------------------------------------------------------
// The backend

namespace {

// How a read's, claim's or poll's reply leaves a slot. `with_item`: copy the
// value into slot.item.
void take_reply(const std::shared_ptr<MemcachedMetaBackend::Impl>& impl, LeaseSlot& slot,
                const Reply& reply, Ttl lease_ttl, bool with_item) {
  slot.item.reset();
  slot.cas = 0;
  slot.confirmed = false;
  slot.marked_stale = false;
  slot.holder = {};
  if (reply.code == Code::en) {
    slot.lease = LeaseState::free;
    return;
  }
  if (reply.code != Code::va && reply.code != Code::hd) unexpected("get", slot.key, reply);
  slot.cas = reply.cas.value_or(0);
  slot.marked_stale = reply.stale;
  const bool empty = placeholder(reply);
  if (with_item && !empty) slot.item = Item{std::string(reply.data), reply.flags.value_or(0)};
  if (reply.won) {
    const auto kind = empty          ? MetaLease::Kind::placeholder
                      : reply.stale ? MetaLease::Kind::marked
                                    : MetaLease::Kind::refresh;
    slot.lock =
        std::make_unique<MetaLease>(impl, std::string(slot.key), kind, slot.cas, lease_ttl);
    slot.lease = LeaseState::won;
    slot.fence = Fence{Fence::Kind::version, slot.cas};
    slot.confirmed = true;
  } else {
    slot.lease = reply.held ? LeaseState::held : LeaseState::free;
  }
}

std::string read_flags(const LeaseRequest& request) {
  std::string flags;
  if (request.claim_if_missing) flags += fmt::format("N{} ", exptime(request.ttl));
  if (request.claim_if_ttl_below) {
    flags += fmt::format("R{} ", std::max<std::int64_t>(1, request.claim_if_ttl_below->count()));
  }
  flags += "v f c t";
  return flags;
}

}  // namespace

MemcachedMetaBackend::MemcachedMetaBackend(std::string_view config)
    : MemcachedMetaBackend(Options{std::string(config), false}) {}

MemcachedMetaBackend::MemcachedMetaBackend(Options options)
    : impl_(std::make_shared<Impl>(std::move(options))) {}

MemcachedMetaBackend::~MemcachedMetaBackend() = default;

namespace {

// A lease that a plain read won without asking: memcached hands the first
// reader of an item marked stale the right to refresh it. It is given back
// at once, or no one would refresh the item.
struct Unasked {
  std::string key;
  MetaLease::Kind kind;
  Cas cas;
};

std::optional<Unasked> unasked(std::string_view key, const Reply& r) {
  if (!r.won) return std::nullopt;
  return Unasked{std::string(key),
                 placeholder(r) ? MetaLease::Kind::placeholder
                                : (r.stale ? MetaLease::Kind::marked : MetaLease::Kind::refresh),
                 r.cas.value_or(0)};
}

void give_back(const std::shared_ptr<MemcachedMetaBackend::Impl>& impl, const Unasked& lease) {
  MetaLease(impl, lease.key, lease.kind, lease.cas, Ttl{}).unlock();
}

}  // namespace

bool MemcachedMetaBackend::get_view(
    std::string_view key, detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  check_key("get", key);
  std::string request;
  meta::append_mg(request, key, "v f c");
  bool found = false;
  std::optional<Unasked> lease;
  auto& client = impl_->client;
  client.exchange(
      client.server(client.server_for(key)), request, 1,
      [&](const Reply& r) {
        if (r.code == Code::en) return;
        if (r.code != Code::va) unexpected("get", key, r);
        lease = unasked(key, r);
        if (placeholder(r)) return;
        found = true;
        visit(r.data, r.flags.value_or(0));
      },
      "get");
  if (lease) give_back(impl_, *lease);
  return found;
}

std::optional<Item> MemcachedMetaBackend::get(std::string_view key) {
  std::optional<Item> out;
  get_view(key, [&](std::string_view data, std::uint32_t flags) {
    out = Item{std::string(data), flags};
  });
  return out;
}

std::optional<Item> MemcachedMetaBackend::gets(std::string_view key, Cas& cas) {
  check_key("gets", key);
  std::string request;
  meta::append_mg(request, key, "v f c");
  std::optional<Item> out;
  std::optional<Unasked> lease;
  cas = 0;
  auto& client = impl_->client;
  client.exchange(
      client.server(client.server_for(key)), request, 1,
      [&](const Reply& r) {
        if (r.code == Code::en) return;
        if (r.code != Code::va) unexpected("gets", key, r);
        lease = unasked(key, r);
        if (placeholder(r)) return;
        cas = r.cas.value_or(0);
        out = Item{std::string(r.data), r.flags.value_or(0)};
      },
      "gets");
  if (lease) give_back(impl_, *lease);
  return out;
}

namespace {

// One ms; returns its code.
Code store_one(meta::Client& client, std::string_view op, std::string_view key, const Item& item,
               std::string_view flags) {
  check_key(op, key);
  std::string request;
  meta::append_ms(request, key, item.data, flags);
  Code code = Code::error;
  client.exchange(
      client.server(client.server_for(key)), request, 1,
      [&](const Reply& r) {
        if (r.code == Code::client_error || r.code == Code::server_error) unexpected(op, key, r);
        code = r.code;
      },
      op);
  return code;
}

}  // namespace

void MemcachedMetaBackend::set(std::string_view key, const Item& item, Ttl ttl) {
  const Code code = store_one(impl_->client, "set", key, item,
                              fmt::format("T{} F{}", exptime(ttl), item.flags));
  if (code != Code::hd) throw BackendError(fmt::format("memcached set of key {}: not stored", key));
}

bool MemcachedMetaBackend::add(std::string_view key, const Item& item, Ttl ttl) {
  return store_one(impl_->client, "add", key, item,
                   fmt::format("T{} F{} ME", exptime(ttl), item.flags)) == Code::hd;
}

bool MemcachedMetaBackend::cas(std::string_view key, const Item& item, Ttl ttl, Cas version) {
  return store_one(impl_->client, "cas", key, item,
                   fmt::format("T{} F{} C{}", exptime(ttl), item.flags, version)) == Code::hd;
}

bool MemcachedMetaBackend::remove(std::string_view key) {
  check_key("delete", key);
  std::string request;
  meta::append_md(request, key, "");
  bool removed = false;
  auto& client = impl_->client;
  client.exchange(
      client.server(client.server_for(key)), request, 1,
      [&](const Reply& r) {
        if (r.code != Code::hd && r.code != Code::nf) unexpected("delete", key, r);
        removed = r.code == Code::hd;
      },
      "delete");
  return removed;
}

bool MemcachedMetaBackend::mark_stale(std::string_view key) {
  check_key("mark stale", key);
  std::string request;
  meta::append_md(request, key, "I");
  bool marked = false;
  auto& client = impl_->client;
  client.exchange(
      client.server(client.server_for(key)), request, 1,
      [&](const Reply& r) {
        if (r.code != Code::hd && r.code != Code::nf) unexpected("mark stale", key, r);
        marked = r.code == Code::hd;
      },
      "mark stale");
  return marked;
}

std::vector<std::optional<Item>> MemcachedMetaBackend::get_multi(
    std::span<const std::string_view> keys) {
  std::vector<std::optional<Item>> out(keys.size());
  std::vector<Unasked> leases;
  auto& client = impl_->client;
  for (const auto& [server, group] :
       by_server(client, keys.size(), [&](std::size_t i) { return keys[i]; })) {
    std::string request;
    std::vector<std::string_view> group_keys;
    for (std::size_t j = 0; j < group.size(); ++j) {
      check_key("get_multi", keys[group[j]]);
      group_keys.push_back(keys[group[j]]);
      meta::append_mg(request, keys[group[j]], fmt::format("v f c q {}", marker(j)));
    }
    meta::append_mn(request);
    client.exchange(
        client.server(server), request, 0,
        [&](const Reply& r) {
          const std::size_t j = matched(r, group_keys, "get_multi");
          if (r.code != Code::va) unexpected("get_multi", group_keys[j], r);
          if (auto lease = unasked(group_keys[j], r)) leases.push_back(std::move(*lease));
          if (!placeholder(r)) out[group[j]] = Item{std::string(r.data), r.flags.value_or(0)};
        },
        "get_multi");
  }
  for (const auto& lease : leases) give_back(impl_, lease);
  return out;
}

void MemcachedMetaBackend::set_multi(std::span<const KeyedItem> items, Ttl ttl) {
  auto& client = impl_->client;
  for (const auto& [server, group] :
       by_server(client, items.size(), [&](std::size_t i) { return items[i].key; })) {
    std::string request;
    std::vector<std::string_view> group_keys;
    for (std::size_t j = 0; j < group.size(); ++j) {
      const KeyedItem& it = items[group[j]];
      check_key("set_multi", it.key);
      group_keys.push_back(it.key);
      meta::append_ms(request, it.key, it.item->data,
                      fmt::format("T{} F{} q {}", exptime(ttl), it.item->flags, marker(j)));
    }
    meta::append_mn(request);
    client.exchange(
        client.server(server), request, 0,
        [&](const Reply& r) {
          const std::size_t j = matched(r, group_keys, "set_multi");
          unexpected("set_multi", group_keys[j], r);
        },
        "set_multi");
  }
}

void MemcachedMetaBackend::remove_multi(std::span<const std::string_view> keys) {
  auto& client = impl_->client;
  for (const auto& [server, group] :
       by_server(client, keys.size(), [&](std::size_t i) { return keys[i]; })) {
    std::string request;
    std::vector<std::string_view> group_keys;
    for (std::size_t j = 0; j < group.size(); ++j) {
      check_key("delete_multi", keys[group[j]]);
      group_keys.push_back(keys[group[j]]);
      meta::append_md(request, keys[group[j]], fmt::format("q {}", marker(j)));
    }
    meta::append_mn(request);
    client.exchange(
        client.server(server), request, 0,
        [&](const Reply& r) {
          const std::size_t j = matched(r, group_keys, "delete_multi");
          if (r.code != Code::nf) unexpected("delete_multi", group_keys[j], r);
        },
        "delete_multi");
  }
}

std::unique_ptr<DistributedLock> MemcachedMetaBackend::make_lock(std::string_view key, Ttl ttl) {
  return std::make_unique<MetaLease>(impl_, std::string(key), ttl, LockInfo{});
}

// ---------------------------------------------------------------------------
// The engine's operations

bool MemcachedMetaBackend::read_view(
    LeaseSlot& slot, const LeaseRequest& request,
    detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  check_key("get", slot.key);
  std::string line;
  meta::append_mg(line, slot.key, read_flags(request));
  bool found = false;
  auto& client = impl_->client;
  client.exchange(
      client.server(client.server_for(slot.key)), line, 1,
      [&](const Reply& r) {
        take_reply(impl_, slot, r, request.ttl, false);
        if (r.code == Code::va && !placeholder(r)) {
          found = true;
          visit(r.data, r.flags.value_or(0));
        }
      },
      "get");
  return found;
}

namespace {

// One pipeline per server of `mg` requests for `slots` (`flags` each, the
// key and opaque echoed); `on_reply(slot, reply)` for every reply. With
// `quiet`, misses are not answered (`q`, ended by `mn`) and `on_miss` is
// called for the slots that got no reply.
template <class OnReply, class OnMiss>
void mg_batch(meta::Client& client, std::span<LeaseSlot> slots, std::string_view flags,
              bool quiet, std::string_view op, OnReply on_reply, OnMiss on_miss) {
  for (const auto& [server, group] :
       by_server(client, slots.size(), [&](std::size_t i) { return slots[i].key; })) {
    std::string request;
    std::vector<std::string_view> keys;
    for (std::size_t j = 0; j < group.size(); ++j) {
      const std::string_view key = slots[group[j]].key;
      check_key(op, key);
      keys.push_back(key);
      meta::append_mg(request, key,
                      fmt::format("{}{} {}", flags, quiet ? " q" : "", marker(j)));
    }
    if (quiet) meta::append_mn(request);
    std::vector<bool> answered(group.size(), false);
    client.exchange(
        client.server(server), request, quiet ? 0 : group.size(),
        [&](const Reply& r) {
          const std::size_t j = matched(r, keys, op);
          if (answered[j]) throw BackendError(fmt::format("memcached {}: two replies for one key", op));
          answered[j] = true;
          on_reply(slots[group[j]], r);
        },
        op);
    for (std::size_t j = 0; j < group.size(); ++j) {
      if (!answered[j]) on_miss(slots[group[j]]);
    }
  }
}

}  // namespace

void MemcachedMetaBackend::read(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  mg_batch(
      impl_->client, slots, read_flags(request), true, "get_multi",
      [&](LeaseSlot& slot, const Reply& r) { take_reply(impl_, slot, r, request.ttl, true); },
      [&](LeaseSlot& slot) {
        slot.item.reset();
        slot.cas = 0;
        slot.lease = LeaseState::free;
        slot.confirmed = false;
        slot.marked_stale = false;
      });
}

void MemcachedMetaBackend::claim(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  // R with 30 days wins any value that expires (and has no lease out).
  std::vector<std::size_t> without_expiry;
  mg_batch(
      impl_->client, slots, fmt::format("N{} R2592000 v f c t", exptime(request.ttl)), false,
      "lock",
      [&](LeaseSlot& slot, const Reply& r) {
        take_reply(impl_, slot, r, request.ttl, true);
        if (slot.lease == LeaseState::free && r.ttl.value_or(-1) < 0) {
          without_expiry.push_back(static_cast<std::size_t>(&slot - slots.data()));
        }
      },
      [&](LeaseSlot&) {});
  // A value that never expires has no lease of its own: the lock item.
  for (std::size_t i : without_expiry) {
    LeaseSlot& slot = slots[i];
    auto lock = std::make_unique<MetaLease>(impl_, std::string(slot.key), request.ttl, request.info);
    slot.item.reset();
    slot.confirmed = false;
    if (lock->try_lock()) {
      slot.lock = std::move(lock);
      slot.lease = LeaseState::won;
    } else {
      slot.lease = LeaseState::held;
    }
  }
}

void MemcachedMetaBackend::confirm(std::span<LeaseSlot> slots) {
  mg_batch(
      impl_->client, slots, "v f c t", true, "confirm",
      [&](LeaseSlot& slot, const Reply& r) {
        if (r.code != Code::va) unexpected("confirm", slot.key, r);
        slot.cas = r.cas.value_or(0);
        slot.item.reset();
        if (!placeholder(r)) slot.item = Item{std::string(r.data), r.flags.value_or(0)};
        slot.fence = Fence{Fence::Kind::version, slot.cas};
      },
      [&](LeaseSlot& slot) {
        slot.item.reset();
        slot.cas = 0;
        slot.fence = Fence{Fence::Kind::absent, 0};
      });
}

void MemcachedMetaBackend::poll(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  LeaseRequest vivify;
  vivify.claim_if_missing = true;
  vivify.ttl = request.ttl;
  mg_batch(
      impl_->client, slots, read_flags(vivify), false, "poll",
      [&](LeaseSlot& slot, const Reply& r) { take_reply(impl_, slot, r, request.ttl, true); },
      [&](LeaseSlot&) {});
}

void MemcachedMetaBackend::store(std::span<LeaseSlot> slots) {
  std::vector<std::size_t> with_value;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].value != nullptr) with_value.push_back(i);
  }
  auto& client = impl_->client;
  for (const auto& [server, group] : by_server(client, with_value.size(), [&](std::size_t i) {
         return slots[with_value[i]].key;
       })) {
    std::string request;
    std::vector<std::string_view> keys;
    for (std::size_t j = 0; j < group.size(); ++j) {
      LeaseSlot& slot = slots[with_value[group[j]]];
      check_key("set", slot.key);
      keys.push_back(slot.key);
      std::string flags = fmt::format("T{} F{}", exptime(slot.ttl), slot.value->flags);
      switch (slot.fence.kind) {
        case Fence::Kind::version:
          flags += fmt::format(" C{}", slot.fence.version);
          break;
        case Fence::Kind::absent:
          flags += " ME";
          break;
        case Fence::Kind::none:
          break;
      }
      meta::append_ms(request, slot.key, slot.value->data, fmt::format("{} {}", flags, marker(j)));
    }
    std::size_t next = 0;  // every ms is answered, in order
    client.exchange(
        client.server(server), request, group.size(),
        [&](const Reply& r) {
          const bool error = r.code == Code::client_error || r.code == Code::server_error;
          const std::size_t j = error ? next : matched(r, keys, "set");
          ++next;
          LeaseSlot& slot = slots[with_value[group[j]]];
          // Stored, or the lease's item replaced or gone (a store refused as
          // too large deletes the key too): nothing to give back.
          if (auto* lease = dynamic_cast<MetaLease*>(slot.lock.get())) lease->spent();
          if (r.code != Code::hd && r.code != Code::ex && r.code != Code::nf &&
              r.code != Code::ns) {
            unexpected("set", slot.key, r);
          }
          slot.stored = r.code == Code::hd;
        },
        "set");
  }
}

std::optional<ServerTime> MemcachedMetaBackend::server_time(std::string_view key) {
  auto& client = impl_->client;
  const std::int64_t seconds = client.stats_time(client.server(client.server_for(key)));
  return ServerTime{TimePoint(std::chrono::seconds(seconds)), std::chrono::seconds(1)};
}

}  // namespace dogpile
