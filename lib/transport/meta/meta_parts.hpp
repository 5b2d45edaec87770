// SPDX-License-Identifier: MIT
// What the meta transport's sources share (internal to lib/transport/meta/):
// the backend's state, one request or a batch on a server, and the leases
// the server grants (MetaLease, meta_lease.cpp).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/memcached_meta.hpp"
#include "format/keys.hpp"
#include "format/lock_item.hpp"
#include "transport/exptime.hpp"
#include "transport/meta/meta_batch.hpp"
#include "transport/meta/meta_channel.hpp"
#include "transport/meta/meta_options.hpp"
#include "transport/wire_client.hpp"

namespace dogpile {

struct MemcachedMetaBackend::Impl {
  explicit Impl(const Options& options) : client(config_of(options), options.auto_eject) {}
  static detail::wire::Config config_of(const Options& options) {
    auto config = detail::meta::parse_options(options.config);
    config.max_item_size = options.max_item_size;
    return config;
  }
  detail::wire::Client client;
  // Each event loop's channel to each server (asynchronous calls' reads).
  struct LoopChannel {
    const void* loop;
    std::size_t server;
    std::shared_ptr<detail::meta::Channel> channel;
  };
  std::mutex channels_mutex;
  std::vector<LoopChannel> channels;
};

namespace detail::meta_parts {

namespace meta = detail::meta;
using meta::Code;
using meta::Reply;
using Impl = MemcachedMetaBackend::Impl;

[[noreturn]] inline void unexpected(std::string_view op, std::string_view key, const Reply& reply) {
  switch (reply.code) {
    case Code::client_error:
      throw BackendError(
          fmt::format("memcached {} of key {}: CLIENT_ERROR {}", op, key, reply.message), "",
          "CLIENT_ERROR");
    case Code::server_error:
      // memcached says "object too large for cache" of an item above -I.
      throw BackendError(
          fmt::format("memcached {} of key {}: SERVER_ERROR {}", op, key, reply.message), "",
          wire::says_too_big(reply.message) ? "ITEM_TOO_BIG" : "SERVER_ERROR");
    default:
      throw detail::wire::Malformed(
          fmt::format("memcached {} of key {}: an unexpected reply", op, key), "",
          "PROTOCOL_ERROR");
  }
}

// An empty item with no flags: a lease placeholder (made by `N` on a miss),
// not a value.
inline bool placeholder(const Reply& reply) noexcept {
  return reply.data.empty() && reply.flags.value_or(0) == 0;
}

// Runs a batch of `count` requests on `server` (see meta::Batch).
inline void run(Impl& impl, std::size_t server, std::string_view op, std::size_t count, bool quiet,
                meta::Batch::Write write, meta::Batch::OnReply on_reply, const Request& request,
                const wire::Unanswered* unanswered = nullptr) {
  meta::Batch batch(op, count, quiet, write, on_reply);
  impl.client.exchange(impl.client.server(server), batch, op, request, unanswered);
}

// One request, one reply, to `server`.
template <class Write, class OnReply>
void one(Impl& impl, std::size_t server, std::string_view op, Write write, OnReply on_reply,
         const Request& request, const wire::Unanswered* unanswered = nullptr) {
  run(
      impl, server, op, 1, false,
      [&](std::size_t, std::string& out, std::uint32_t opaque) { write(out, opaque); },
      [&](std::size_t, const Reply* reply) { on_reply(*reply); }, request, unanswered);
}

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

inline LeaseKind kind_of(const Reply& r) noexcept {
  return placeholder(r) ? LeaseKind::placeholder
                        : (r.stale ? LeaseKind::marked : LeaseKind::refresh);
}

inline std::optional<Unasked> unasked(std::string_view key, std::size_t server, const Reply& r) {
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

}  // namespace detail::meta_parts
}  // namespace dogpile
