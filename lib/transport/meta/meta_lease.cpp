// SPDX-License-Identifier: MIT
// The leases memcached grants in a read (W), and the lock item for a value
// that never expires: taken, extended, given back (see meta_parts.hpp).
#include "transport/meta/meta_parts.hpp"

#include <utility>

namespace dogpile::detail::meta_parts {

using detail::lock_exptime;

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

}  // namespace dogpile::detail::meta_parts
