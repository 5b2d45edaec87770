// MemcachedMetaBackend: the engine's operations on memcached's meta commands.
// The client (connections, health, placement, bounds) is wire_client.cpp; a
// batch of meta requests is meta_batch.cpp; the protocol's text is
// meta_protocol.cpp.
#include "dogpile/memcached_meta.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <utility>

#include "format/keys.hpp"
#include "format/lock_item.hpp"
#include "transport/exptime.hpp"
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

struct MemcachedMetaBackend::Impl {
  explicit Impl(const Options& options) : client(config_of(options), options.auto_eject) {}
  static detail::wire::Config config_of(const Options& options) {
    auto config = meta::parse_options(options.config);
    config.max_item_size = options.max_item_size;
    return config;
  }
  detail::wire::Client client;
};

namespace {

using Impl = MemcachedMetaBackend::Impl;

[[noreturn]] void unexpected(std::string_view op, std::string_view key, const Reply& reply) {
  switch (reply.code) {
    case Code::client_error:
      throw BackendError(
          fmt::format("memcached {} of key {}: CLIENT_ERROR {}", op, key, reply.message), "",
          "CLIENT_ERROR");
    case Code::server_error:
      // memcached says "object too large for cache" of an item above -I.
      throw BackendError(
          fmt::format("memcached {} of key {}: SERVER_ERROR {}", op, key, reply.message), "",
          reply.message.find("too large") != std::string_view::npos ? "ITEM_TOO_BIG"
                                                                    : "SERVER_ERROR");
    default:
      throw detail::wire::Malformed(
          fmt::format("memcached {} of key {}: an unexpected reply", op, key), "",
          "PROTOCOL_ERROR");
  }
}

// An empty item with no flags: a lease placeholder (made by `N` on a miss),
// not a value.
bool placeholder(const Reply& reply) noexcept {
  return reply.data.empty() && reply.flags.value_or(0) == 0;
}

// Runs a batch of `count` requests on `server` (see meta::Batch).
void run(Impl& impl, std::size_t server, std::string_view op, std::size_t count, bool quiet,
         meta::Batch::Write write, meta::Batch::OnReply on_reply) {
  meta::Batch batch(op, count, quiet, write, on_reply);
  impl.client.exchange(impl.client.server(server), batch, op);
}

// One request, one reply, to `server`.
template <class Write, class OnReply>
void one(Impl& impl, std::size_t server, std::string_view op, Write write, OnReply on_reply) {
  run(
      impl, server, op, 1, false,
      [&](std::size_t, std::string& out, std::uint32_t opaque) { write(out, opaque); },
      [&](std::size_t, const Reply* reply) { on_reply(*reply); });
}

}  // namespace

// ---------------------------------------------------------------------------
// MetaLease: a lease the server granted, or a lock item

namespace detail {

enum class LeaseKind : std::uint8_t {
  placeholder,  // W on a miss: the server's empty item, deleted to give it back
  refresh,      // W on a value whose time ran low: an empty append gives it back
  marked,       // W on a value marked stale: marked again to give it back
  lock_item,    // k#L, added (a value that never expires has no lease of its own)
};

// A lease that a read won without asking: memcached hands the first reader
// of an item marked stale the right to refresh it, whatever the read was
// for. It is given back at once, or no one would refresh the item.
struct Unasked {
  std::string key;
  std::size_t server;
  LeaseKind kind;
  Cas cas;
};

LeaseKind kind_of(const Reply& r) noexcept {
  return placeholder(r) ? LeaseKind::placeholder
                        : (r.stale ? LeaseKind::marked : LeaseKind::refresh);
}

std::optional<Unasked> unasked(std::string_view key, std::size_t server, const Reply& r) {
  if (!r.won) return std::nullopt;
  return Unasked{std::string(key), server, kind_of(r), r.cas.value_or(0)};
}

void give_back(const std::shared_ptr<Impl>& impl, const Unasked& lease);

class MetaLease final : public DistributedLock {
 public:
  using Kind = LeaseKind;

  // A lease granted by `server`: held from the start.
  MetaLease(std::shared_ptr<Impl> impl, std::size_t server, std::string key, Kind kind, Cas cas,
            Ttl ttl)
      : impl_(std::move(impl)),
        server_(server),
        key_(std::move(key)),
        kind_(kind),
        cas_(cas),
        ttl_(ttl) {
    granted_ = true;
    const bool taken = try_lock();
    (void)taken;
  }
  // A lock item, not taken yet, on the value's server.
  MetaLease(std::shared_ptr<Impl> impl, std::string value_key, Ttl ttl, LockInfo info)
      : impl_(std::move(impl)),
        server_(impl_->client.server_for(value_key)),
        key_(lock_key_for(value_key)),
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
  // The server that granted the lease: its operations go there, even if the
  // ring changed since (auto-eject), as CAS values mean nothing elsewhere.
  [[nodiscard]] std::size_t server_index() const noexcept { return server_; }

 protected:
  bool try_acquire() override;
  bool release_acquired() override;

 private:
  // One request with one reply; returns its code and, for mg, its CAS.
  template <class Write>
  std::pair<Code, Cas> ask(std::string_view op, Write write) {
    std::pair<Code, Cas> out{Code::error, 0};
    one(*impl_, server_, op, write, [&](const Reply& r) {
      if (r.code == Code::client_error || r.code == Code::server_error) unexpected(op, key_, r);
      out = {r.code, r.cas.value_or(0)};
    });
    return out;
  }

  std::shared_ptr<Impl> impl_;
  std::size_t server_;
  std::string key_;  // the item that is the lease
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
  const std::string bytes = encode_lock_item(item);
  const std::string flags = fmt::format("T{} F{} ME c", lock_exptime(ttl_), kLockFlags);
  const auto [code, cas] = ask("lock", [&](std::string& out, std::uint32_t opaque) {
    meta::append_ms(out, key_, bytes, flags, opaque);
  });
  if (code != Code::hd) {
    if (code == Code::ns) return false;
    throw BackendError(fmt::format("memcached lock of key {}: unexpected reply", key_), {},
                       "PROTOCOL_ERROR");
  }
  cas_ = cas;
  spent_ = false;
  return true;
}

bool MetaLease::release_acquired() {
  if (std::exchange(spent_, false)) return true;
  const std::string cas = fmt::format("C{}", cas_);
  const auto [code, unused] = ask("release lease", [&](std::string& out, std::uint32_t opaque) {
    switch (kind_) {
      case Kind::placeholder:
      case Kind::lock_item:
        meta::append_md(out, key_, cas, opaque);
        break;
      case Kind::refresh:
        meta::append_ms(out, key_, "", "MA " + cas, opaque);
        break;
      case Kind::marked:
        meta::append_md(out, key_, "I " + cas, opaque);
        break;
    }
  });
  return code == Code::hd;
}

bool MetaLease::extend() {
  // One request: the CAS and the time left are read before the touch, which
  // keeps the CAS (so the fence stays valid).
  const std::string flags = fmt::format("c t T{}", lock_exptime(ttl_));
  Cas seen = 0;
  std::int64_t left = 0;
  bool there = false;
  std::optional<Unasked> unasked_lease;
  one(
      *impl_, server_, "extend lease",
      [&](std::string& out, std::uint32_t opaque) { meta::append_mg(out, key_, flags, opaque); },
      [&](const Reply& r) {
        if (r.code == Code::en) return;
        if (r.code != Code::hd && r.code != Code::va) unexpected("extend lease", key_, r);
        there = true;
        seen = r.cas.value_or(0);
        left = r.ttl.value_or(0);
        // Marked stale since (md I): this read won the refresh; not ours to keep.
        unasked_lease = unasked(key_, server_, r);
      });
  if (unasked_lease) give_back(impl_, *unasked_lease);
  if (!there) return false;
  // Not ours (replaced, or marked stale since), or ours with more time left
  // than the lease needs: its own time to live is put back.
  const bool ours = seen == cas_;
  if (!ours || left < 0 || left > ttl_.count()) {
    const std::string restore =
        left < 0 ? std::string("T0") : fmt::format("T{}", lock_exptime(Ttl(left)));
    ask("extend lease", [&](std::string& out, std::uint32_t opaque) {
      meta::append_mg(out, key_, restore, opaque);
    });
  }
  return ours;
}

void give_back(const std::shared_ptr<Impl>& impl, const Unasked& lease) {
  MetaLease(impl, lease.server, lease.key, lease.kind, lease.cas, Ttl{}).unlock();
}

}  // namespace detail

using detail::give_back;
using detail::kind_of;
using detail::MetaLease;
using detail::unasked;
using detail::Unasked;

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

// A slot that got no reply (a quiet read's miss).
void no_item(LeaseSlot& slot) noexcept {
  slot.item.reset();
  slot.cas = 0;
  slot.lease = LeaseState::free;
  slot.confirmed = false;
  slot.marked_stale = false;
}

// How a read's, claim's or poll's reply from `server` leaves a slot.
// `with_item`: copy the value into slot.item.
void take_reply(const std::shared_ptr<Impl>& impl, std::size_t server, LeaseSlot& slot,
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
  if (with_item && !placeholder(reply)) {
    slot.item = Item{std::string(reply.data), reply.flags.value_or(0)};
  }
  if (reply.won) {
    slot.lock = std::make_unique<MetaLease>(impl, server, std::string(slot.key), kind_of(reply),
                                            slot.cas, lease_ttl);
    slot.lease = LeaseState::won;
    slot.fence = Fence{Fence::Kind::version, slot.cas};
    slot.confirmed = true;
  } else {
    slot.lease = reply.held ? LeaseState::held : LeaseState::free;
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

// The exptime of a value stored under `key` for `ttl`, on its server's clock.
std::int64_t expires_for(Impl& impl, std::string_view key, Ttl ttl) {
  check_backend_key("set", key);
  return impl.client.exptime(impl.client.server_for(key), ttl);
}

// One ms to the server of `key`; returns its code.
Code store_one(Impl& impl, std::string_view op, std::string_view key, const Item& item,
               const std::string& flags) {
  check_backend_key(op, key);
  Code code = Code::error;
  one(
      impl, impl.client.server_for(key), op,
      [&](std::string& out, std::uint32_t opaque) {
        meta::append_ms(out, key, item.data, flags, opaque);
      },
      [&](const Reply& r) {
        if (r.code == Code::client_error || r.code == Code::server_error) unexpected(op, key, r);
        code = r.code;
      });
  return code;
}

// One pipeline per server of `mg` requests for keys `key_of(i)` (checked
// first: nothing is sent if one is not a memcached key), `flags` each;
// `on_reply(i, server, reply)` for every reply, `on_miss(i)` (quiet) for the
// keys that got none. `server_of(i)`: where key i goes.
template <class ServerOf, class KeyOf, class OnReply, class OnMiss>
void mg_batch(Impl& impl, std::size_t n, ServerOf server_of, KeyOf key_of, std::string_view flags,
              bool quiet, std::string_view op, OnReply on_reply, OnMiss on_miss) {
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
        });
  }
}

// mg_batch over lease slots, each on its key's server.
template <class OnReply, class OnMiss>
void mg_slots(Impl& impl, std::span<LeaseSlot> slots, std::string_view flags, bool quiet,
              std::string_view op, OnReply on_reply, OnMiss on_miss) {
  mg_batch(
      impl, slots.size(), [&](std::size_t i) { return impl.client.server_for(slots[i].key); },
      [&](std::size_t i) { return slots[i].key; }, flags, quiet, op,
      [&](std::size_t i, std::size_t server, const Reply& r) { on_reply(slots[i], server, r); },
      [&](std::size_t i) { on_miss(slots[i]); });
}

// A plain read of one key (`mg k v f c`): `on_item(data, flags, cas)` if
// there is a value (a lease placeholder is none). A lease the server hands
// the read unasked is given back.
template <class OnItem>
bool plain_read(const std::shared_ptr<Impl>& impl, std::string_view op, std::string_view key,
                OnItem on_item) {
  check_backend_key(op, key);
  bool found = false;
  GiveBack unasked_leases{impl, {}};
  const std::size_t server = impl->client.server_for(key);
  one(
      *impl, server, op,
      [&](std::string& out, std::uint32_t opaque) { meta::append_mg(out, key, "v f c", opaque); },
      [&](const Reply& r) {
        if (r.code == Code::en) return;
        if (r.code != Code::va) unexpected(op, key, r);
        unasked_leases.add(unasked(key, server, r));
        if (placeholder(r)) return;
        found = true;
        on_item(r.data, r.flags.value_or(0), r.cas.value_or(0));
      });
  return found;
}

}  // namespace

MemcachedMetaBackend::MemcachedMetaBackend(std::string_view config)
    : MemcachedMetaBackend(Options{std::string(config)}) {}

MemcachedMetaBackend::MemcachedMetaBackend(Options options)
    : impl_(std::make_shared<Impl>(options)) {}

MemcachedMetaBackend::~MemcachedMetaBackend() = default;

// --- plain operations ---------------------------------------------------------

bool MemcachedMetaBackend::get_view(
    std::string_view key, detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  return plain_read(impl_, "get", key,
                    [&](std::string_view data, std::uint32_t flags, Cas) { visit(data, flags); });
}

std::optional<Item> MemcachedMetaBackend::get(std::string_view key) {
  std::optional<Item> out;
  get_view(key, [&](std::string_view data, std::uint32_t flags) {
    out = Item{std::string(data), flags};
  });
  return out;
}

std::optional<Item> MemcachedMetaBackend::gets(std::string_view key, Cas& cas) {
  std::optional<Item> out;
  cas = 0;
  plain_read(impl_, "gets", key, [&](std::string_view data, std::uint32_t flags, Cas version) {
    out = Item{std::string(data), flags};
    cas = version;
  });
  return out;
}

void MemcachedMetaBackend::set(std::string_view key, const Item& item, Ttl ttl) {
  const Code code = store_one(*impl_, "set", key, item,
                              fmt::format("T{} F{}", expires_for(*impl_, key, ttl), item.flags));
  if (code != Code::hd) {
    throw BackendError(fmt::format("memcached set of key {}: not stored", key), {}, "NOT_STORED");
  }
}

bool MemcachedMetaBackend::add(std::string_view key, const Item& item, Ttl ttl) {
  return store_one(*impl_, "add", key, item,
                   fmt::format("T{} F{} ME", expires_for(*impl_, key, ttl), item.flags)) ==
         Code::hd;
}

bool MemcachedMetaBackend::cas(std::string_view key, const Item& item, Ttl ttl, Cas version) {
  return store_one(*impl_, "cas", key, item,
                   fmt::format("T{} F{} C{}", expires_for(*impl_, key, ttl), item.flags,
                               version)) == Code::hd;
}

bool MemcachedMetaBackend::remove(std::string_view key) {
  check_backend_key("delete", key);
  bool removed = false;
  one(
      *impl_, impl_->client.server_for(key), "delete",
      [&](std::string& out, std::uint32_t opaque) { meta::append_md(out, key, "", opaque); },
      [&](const Reply& r) {
        if (r.code != Code::hd && r.code != Code::nf) unexpected("delete", key, r);
        removed = r.code == Code::hd;
      });
  return removed;
}

bool MemcachedMetaBackend::mark_stale(std::string_view key, Ttl keep_for) {
  check_backend_key("mark stale", key);
  const std::string flags = fmt::format("I T{}", expires_for(*impl_, key, keep_for));
  bool marked = false;
  one(
      *impl_, impl_->client.server_for(key), "mark stale",
      [&](std::string& out, std::uint32_t opaque) { meta::append_md(out, key, flags, opaque); },
      [&](const Reply& r) {
        if (r.code != Code::hd && r.code != Code::nf) unexpected("mark stale", key, r);
        marked = r.code == Code::hd;
      });
  return marked;
}

std::vector<std::optional<Item>> MemcachedMetaBackend::get_multi(
    std::span<const std::string_view> keys) {
  std::vector<std::optional<Item>> out(keys.size());
  GiveBack unasked_leases{impl_, {}};
  auto& client = impl_->client;
  mg_batch(
      *impl_, keys.size(), [&](std::size_t i) { return client.server_for(keys[i]); },
      [&](std::size_t i) { return keys[i]; }, "v f c", true, "get_multi",
      [&](std::size_t i, std::size_t server, const Reply& r) {
        if (r.code != Code::va) unexpected("get_multi", keys[i], r);
        unasked_leases.add(unasked(keys[i], server, r));
        if (!placeholder(r)) out[i] = Item{std::string(r.data), r.flags.value_or(0)};
      },
      [](std::size_t) {});
  return out;
}

void MemcachedMetaBackend::set_multi(std::span<const KeyedItem> items, Ttl ttl) {
  for (const KeyedItem& it : items) check_backend_key("set_multi", it.key);
  auto& client = impl_->client;
  std::string flags;
  for (const auto& [server, group] : wire::by_server(
           items.size(), [&](std::size_t i) { return client.server_for(items[i].key); })) {
    const std::int64_t expires = client.exptime(server, ttl);
    // Stored items are not answered (q): any reply is a failure.
    run(
        *impl_, server, "set_multi", group.size(), true,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          const KeyedItem& it = items[group[j]];
          flags.clear();
          fmt::format_to(std::back_inserter(flags), "T{} F{} q", expires, it.item->flags);
          meta::append_ms(out, it.key, it.item->data, flags, opaque);
        },
        [&](std::size_t j, const Reply* r) {
          if (r != nullptr) unexpected("set_multi", items[group[j]].key, *r);
        });
  }
}

void MemcachedMetaBackend::remove_multi(std::span<const std::string_view> keys) {
  for (const std::string_view key : keys) check_backend_key("delete_multi", key);
  auto& client = impl_->client;
  for (const auto& [server, group] :
       wire::by_server(keys.size(), [&](std::size_t i) { return client.server_for(keys[i]); })) {
    run(
        *impl_, server, "delete_multi", group.size(), true,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          meta::append_md(out, keys[group[j]], "q", opaque);
        },
        [&](std::size_t j, const Reply* r) {
          if (r != nullptr && r->code != Code::nf) unexpected("delete_multi", keys[group[j]], *r);
        });
  }
}

std::unique_ptr<DistributedLock> MemcachedMetaBackend::make_lock(std::string_view key, Ttl ttl) {
  check_backend_key("lock", key);
  check_backend_key("lock", detail::lock_key_for(key));
  return std::make_unique<MetaLease>(impl_, std::string(key), ttl, LockInfo{});
}

std::optional<ServerTime> MemcachedMetaBackend::server_time(std::string_view key) {
  check_backend_key("stats", key);
  auto& client = impl_->client;
  const std::int64_t seconds = client.stats_time(client.server(client.server_for(key)));
  return ServerTime{TimePoint(std::chrono::seconds(seconds)), std::chrono::seconds(1)};
}

// --- the engine's operations --------------------------------------------------

bool MemcachedMetaBackend::read_view(
    LeaseSlot& slot, const LeaseRequest& request,
    detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  check_backend_key("get", slot.key);
  const std::string& flags = read_flags(request);
  bool found = false;
  const std::size_t server = impl_->client.server_for(slot.key);
  one(
      *impl_, server, "get",
      [&](std::string& out, std::uint32_t opaque) {
        meta::append_mg(out, slot.key, flags, opaque);
      },
      [&](const Reply& r) {
        take_reply(impl_, server, slot, r, request.ttl, false);
        if (r.code == Code::va && !placeholder(r)) {
          found = true;
          visit(r.data, r.flags.value_or(0));
        }
      });
  return found;
}

void MemcachedMetaBackend::read(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  mg_slots(
      *impl_, slots, read_flags(request), true, "get_multi",
      [&](LeaseSlot& slot, std::size_t server, const Reply& r) {
        take_reply(impl_, server, slot, r, request.ttl, true);
      },
      no_item);
}

void MemcachedMetaBackend::claim(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  for (const LeaseSlot& slot : slots) check_backend_key("lock", detail::lock_key_for(slot.key));
  // R with 30 days wins any value that expires within them (and has no lease
  // out); N any missing key.
  std::vector<std::size_t> without_lease;
  mg_slots(
      *impl_, slots, fmt::format("N{} R2592000 v f c t", lock_exptime(request.ttl)), false, "lock",
      [&](LeaseSlot& slot, std::size_t server, const Reply& r) {
        take_reply(impl_, server, slot, r, request.ttl, true);
        const std::int64_t left = r.ttl.value_or(-1);
        if (slot.lease == LeaseState::free && (left < 0 || left >= 2592000)) {
          without_lease.push_back(static_cast<std::size_t>(&slot - slots.data()));
        }
      },
      [&](LeaseSlot&) {});
  // A value that never expires (or not within 30 days) has no lease of its
  // own: the lock item.
  for (std::size_t i : without_lease) {
    LeaseSlot& slot = slots[i];
    auto lock =
        std::make_unique<MetaLease>(impl_, std::string(slot.key), request.ttl, request.info);
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
  GiveBack unasked_leases{impl_, {}};
  mg_slots(
      *impl_, slots, "v f c t", true, "confirm",
      [&](LeaseSlot& slot, std::size_t server, const Reply& r) {
        if (r.code != Code::va) unexpected("confirm", slot.key, r);
        unasked_leases.add(unasked(slot.key, server, r));
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
  mg_slots(
      *impl_, slots, read_flags(vivify), false, "poll",
      [&](LeaseSlot& slot, std::size_t server, const Reply& r) {
        take_reply(impl_, server, slot, r, request.ttl, true);
      },
      [&](LeaseSlot&) {});
}

void MemcachedMetaBackend::store(std::span<LeaseSlot> slots) {
  std::vector<std::size_t> with_value;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (slots[i].value == nullptr) continue;
    check_backend_key("set", slots[i].key);
    with_value.push_back(i);
  }
  auto& client = impl_->client;
  // A value goes to the server that granted its lease (its CAS means nothing
  // elsewhere), else to its key's.
  auto server_of = [&](std::size_t i) {
    const LeaseSlot& slot = slots[with_value[i]];
    if (const auto* lease = dynamic_cast<const MetaLease*>(slot.lock.get())) {
      return lease->server_index();
    }
    return client.server_for(slot.key);
  };
  std::string flags;
  for (const auto& [server, group] : wire::by_server(with_value.size(), server_of)) {
    std::vector<std::int64_t> expiry(group.size());
    for (std::size_t j = 0; j < group.size(); ++j) {
      expiry[j] = client.exptime(server, slots[with_value[group[j]]].ttl);
    }
    run(
        *impl_, server, "set", group.size(), false,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          const LeaseSlot& slot = slots[with_value[group[j]]];
          flags.clear();
          fmt::format_to(std::back_inserter(flags), "T{} F{}", expiry[j], slot.value->flags);
          switch (slot.fence.kind) {
            case Fence::Kind::version:
              fmt::format_to(std::back_inserter(flags), " C{}", slot.fence.version);
              break;
            case Fence::Kind::absent:
              flags += " ME";
              break;
            case Fence::Kind::none:
              break;
          }
          meta::append_ms(out, slot.key, slot.value->data, flags, opaque);
        },
        [&](std::size_t j, const Reply* r) {
          LeaseSlot& slot = slots[with_value[group[j]]];
          const bool error = r->code == Code::client_error || r->code == Code::server_error;
          // Stored, or the lease's item replaced or gone (a store refused as
          // too large deletes the key too): there is nothing to give back.
          const bool gone = !error || (r->code == Code::server_error &&
                                       r->message.find("too large") != std::string_view::npos);
          if (auto* lease = dynamic_cast<MetaLease*>(slot.lock.get()); lease && gone) {
            lease->spent();
          }
          if (r->code != Code::hd && r->code != Code::ex && r->code != Code::nf &&
              r->code != Code::ns) {
            unexpected("set", slot.key, *r);
          }
          slot.stored = r->code == Code::hd;
        });
  }
}

}  // namespace dogpile
