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
         meta::Batch::Write write, meta::Batch::OnReply on_reply, const Request& request) {
  meta::Batch batch(op, count, quiet, write, on_reply);
  impl.client.exchange(impl.client.server(server), batch, op, request);
}

// One request, one reply, to `server`.
template <class Write, class OnReply>
void one(Impl& impl, std::size_t server, std::string_view op, Write write, OnReply on_reply,
         const Request& request) {
  run(
      impl, server, op, 1, false,
      [&](std::size_t, std::string& out, std::uint32_t opaque) { write(out, opaque); },
      [&](std::size_t, const Reply* reply) { on_reply(*reply); }, request);
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

  bool extend(const Request& request) override;
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
  bool try_acquire(const Request& request) override;
  bool release_acquired(const Request& request) override;

 private:
  // One request with one reply; returns its code and, for mg, its CAS.
  template <class Write>
  std::pair<Code, Cas> ask(std::string_view op, Write write, const Request& request) {
    std::pair<Code, Cas> out{Code::error, 0};
    one(
        *impl_, server_, op, write,
        [&](const Reply& r) {
          if (r.code == Code::client_error || r.code == Code::server_error) {
            unexpected(op, key_, r);
          }
          out = {r.code, r.cas.value_or(0)};
        },
        request);
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

bool MetaLease::try_acquire(const Request& request) {
  if (std::exchange(granted_, false)) return true;
  if (kind_ != Kind::lock_item) return false;  // a lease given back is gone
  const auto item = new_lock_item(key_, info_.started_at, info_.expected, info_.clock_error);
  const std::string bytes = encode_lock_item(item);
  const std::string flags = fmt::format("T{} F{} ME c", lock_exptime(ttl_), kLockFlags);
  const auto [code, cas] = ask(
      "lock",
      [&](std::string& out, std::uint32_t opaque) {
        meta::append_ms(out, key_, bytes, flags, opaque);
      },
      request);
  if (code != Code::hd) {
    if (code == Code::ns) return false;
    throw BackendError(fmt::format("memcached lock of key {}: unexpected reply", key_), {},
                       "PROTOCOL_ERROR");
  }
  cas_ = cas;
  spent_ = false;
  return true;
}

bool MetaLease::release_acquired(const Request& request) {
  if (std::exchange(spent_, false)) return true;
  const std::string cas = fmt::format("C{}", cas_);
  const auto [code, unused] = ask(
      "release lease",
      [&](std::string& out, std::uint32_t opaque) {
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
      },
      request);
  return code == Code::hd;
}

bool MetaLease::extend(const Request& request) {
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
      },
      request);
  if (unasked_lease) give_back(impl_, *unasked_lease);
  if (!there) return false;
  // Not ours (replaced, or marked stale since), or ours with more time left
  // than the lease needs: its own time to live is put back.
  const bool ours = seen == cas_;
  if (!ours || left < 0 || left > ttl_.count()) {
    const std::string restore =
        left < 0 ? std::string("T0") : fmt::format("T{}", lock_exptime(Ttl(left)));
    ask(
        "extend lease",
        [&](std::string& out, std::uint32_t opaque) {
          meta::append_mg(out, key_, restore, opaque);
        },
        request);
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
      return lease->server_index();
    }
  }
  return impl.client.server_for(w.key);
}

}  // namespace

MemcachedMetaBackend::MemcachedMetaBackend(std::string_view config)
    : MemcachedMetaBackend(Options{std::string(config)}) {}

MemcachedMetaBackend::MemcachedMetaBackend(Options options)
    : impl_(std::make_shared<Impl>(options)) {}

MemcachedMetaBackend::~MemcachedMetaBackend() = default;

// read: `mg k <flags>`, the lease asked in the read (N on a miss, R when the
// time left is below the stale grace); one key alone (the hot path), many
// quiet in one pipeline per server.
void MemcachedMetaBackend::read(std::span<KeyRead> keys, const LeaseRequest& lease,
                                const Request& request, const Visit* visit) {
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
    run(
        *impl_, server, op, group.size(), quiet,
        [&](std::size_t j, std::string& out, std::uint32_t opaque) {
          const KeyWrite& w = items[group[j]];
          flags.clear();
          fmt::format_to(std::back_inserter(flags), "T{} F{}", expiry[j], w.item->flags);
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
          const bool gone = !error || (r->code == Code::server_error &&
                                       r->message.find("too large") != std::string_view::npos);
          if (w.lease != nullptr && gone) {
            if (auto* lease = dynamic_cast<MetaLease*>(w.lease->lock.get())) lease->spent();
          }
          if (r->code != Code::hd &&
              (quiet || (r->code != Code::ex && r->code != Code::nf && r->code != Code::ns))) {
            unexpected(op, w.key, *r);
          }
          w.stored = r->code == Code::hd;
        },
        request);
  }
}

// erase: `md k`; many quiet (only NF answers).
void MemcachedMetaBackend::erase(std::span<KeyErase> keys, const Request& request) {
  for (const KeyErase& k : keys) check_backend_key("delete", k.key);
  const bool quiet = keys.size() > 1;
  const std::string_view op = quiet ? "delete_multi" : "delete";
  auto& client = impl_->client;
  for (const auto& [server, group] : wire::by_server(
           keys.size(), [&](std::size_t i) { return client.server_for(keys[i].key); })) {
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
        request);
  }
}

std::optional<bool> MemcachedMetaBackend::mark_stale(std::string_view key, Ttl keep_for,
                                                     const Request& request) {
  check_backend_key("mark stale", key);
  const std::size_t server = impl_->client.server_for(key);
  const std::string flags = fmt::format("I T{}", impl_->client.exptime(server, keep_for, request));
  bool marked = false;
  one(
      *impl_, server, "mark stale",
      [&](std::string& out, std::uint32_t opaque) { meta::append_md(out, key, flags, opaque); },
      [&](const Reply& r) {
        if (r.code != Code::hd && r.code != Code::nf) unexpected("mark stale", key, r);
        marked = r.code == Code::hd;
      },
      request);
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
    auto lock = std::make_unique<MetaLease>(impl_, std::string(key.key), lease.ttl, lease.info);
    key.item.reset();
    key.lease->read_with = false;
    if (lock->try_lock(request)) {
      key.lease->lock = std::move(lock);
      key.lease->state = LeaseState::won;
    } else {
      key.lease->state = LeaseState::held;
    }
  }
}

void MemcachedMetaBackend::confirm(std::span<KeyRead> keys, const Request& request) {
  GiveBack unasked_leases{impl_, {}};
  mg_keys(
      *impl_, keys, "v f c t", true, "confirm",
      [&](std::size_t i, std::size_t server, const Reply& r) {
        KeyRead& key = keys[i];
        if (r.code != Code::va) unexpected("confirm", key.key, r);
        unasked_leases.add(unasked(key.key, server, r));
        key.cas = r.cas.value_or(0);
        key.item.reset();
        if (!placeholder(r)) key.item = Item{std::string(r.data), r.flags.value_or(0)};
        key.lease->fence = Fence{Fence::Kind::version, key.cas};
      },
      [&](KeyRead& key) {
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
