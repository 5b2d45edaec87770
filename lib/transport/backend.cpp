// SPDX-License-Identifier: MIT
#include "dogpile/backend.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

namespace dogpile {

bool DistributedLock::claim() noexcept {
  bool expected = false;
  return busy_.compare_exchange_strong(expected, true, std::memory_order_acquire);
}

bool DistributedLock::try_lock(const Request& request) {
  if (!claim()) return false;
  bool taken = false;
  try {
    taken = try_acquire(request);
  } catch (...) {
    busy_.store(false, std::memory_order_release);
    busy_.notify_one();
    throw;
  }
  if (!taken) {
    busy_.store(false, std::memory_order_release);
    busy_.notify_one();
    return false;
  }
  held_ = true;
  return true;
}

void DistributedLock::lock() {
  while (!claim()) busy_.wait(true, std::memory_order_acquire);
  try {
    auto pause = std::chrono::milliseconds(1);
    while (!try_acquire(Request{})) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
  } catch (...) {
    busy_.store(false, std::memory_order_release);
    busy_.notify_one();
    throw;
  }
  held_ = true;
}

bool DistributedLock::release(const Request& request) {
  if (!held_) return false;
  const bool was_held = release_acquired(request);  // throws: still held, may be tried again
  forget();
  return was_held;
}

void DistributedLock::unlock() noexcept {
  try {
    release();
  } catch (...) {
    forget();  // the lock expires on its own after ttl()
  }
}

void DistributedLock::forget() noexcept {
  if (!held_) return;
  held_ = false;
  busy_.store(false, std::memory_order_release);
  busy_.notify_one();
}

// --- the operations' defaults --------------------------------------------

namespace {

// The fence for a store after reading `item` at version `cas` under the lease.
Fence fence_after(const std::optional<Item>& item, Cas cas) {
  if (!item) return Fence{Fence::Kind::absent, 0};
  if (cas != 0) return Fence{Fence::Kind::version, cas};
  return Fence{};  // a backend without versions: the store replaces what is there
}

// Tries the lease of `key` as a lock: won (the lock kept) or held.
void try_lease(Backend& backend, KeyRead& key, const LeaseRequest& lease, const Request& request) {
  key.lease->try_take(backend.make_lock(key.key, lease.ttl), request);
}

}  // namespace

bool Lease::try_take(std::unique_ptr<DistributedLock> candidate, const Request& request) {
  read_with = false;
  if (!candidate->try_lock(request)) {
    state = LeaseState::held;
    return false;
  }
  lock = std::move(candidate);
  state = LeaseState::won;
  return true;
}

void Backend::claim(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) {
  for (auto& key : keys) try_lease(*this, key, lease, request);
}

void Backend::confirm(std::span<KeyRead> keys, const Request& request) {
  read(keys, LeaseRequest{}, request);
  for (auto& key : keys) key.lease->fence = fence_after(key.item, key.cas);
}

void Backend::poll(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) {
  read(keys, LeaseRequest{}, request);
  for (auto& key : keys) {
    key.lease->read_with = false;
    if (key.item) {
      key.lease->state = LeaseState::unknown;
      continue;
    }
    // No way to ask whether the lock is held but to try it.
    try_lease(*this, key, lease, request);
    if (key.lease->state == LeaseState::won) key.lease->fence = fence_after(key.item, key.cas);
  }
}

void Backend::release(std::span<LeaseEnd> leases, const Request& request) {
  for (auto& end : leases) {
    if (end.lease == nullptr || !end.lease->lock) continue;
    end.lost = !end.lease->lock->release(request);
  }
}

std::optional<bool> Backend::mark_stale(std::string_view, Ttl, const Request&) {
  return std::nullopt;
}

std::optional<ServerTime> Backend::server_time(std::string_view, const Request&) {
  return std::nullopt;
}

std::optional<FleetStats> Backend::fleet_stats() const { return std::nullopt; }

bool Backend::start_read(KeyRead&, const LeaseRequest&, const Request&, const Visit*, detail::Loop&,
                         std::function<void(std::exception_ptr)>) {
  return false;
}

// --- built on the operations ----------------------------------------------

bool Backend::get_view(std::string_view key,
                       detail::FunctionRef<void(std::string_view, std::uint32_t)> visit,
                       const Request& request) {
  KeyRead one{.key = key};
  bool found = false;
  auto each = [&](std::size_t, std::string_view data, std::uint32_t flags) {
    found = true;
    visit(data, flags);
  };
  const Visit visitor(each);
  read({&one, 1}, LeaseRequest{}, request, &visitor);
  return found;
}

std::optional<Item> Backend::get(std::string_view key, const Request& request) {
  KeyRead one{.key = key};
  read({&one, 1}, LeaseRequest{}, request);
  return std::move(one.item);
}

std::optional<Item> Backend::gets(std::string_view key, Cas& cas, const Request& request) {
  KeyRead one{.key = key};
  read({&one, 1}, LeaseRequest{}, request);
  cas = one.item ? one.cas : 0;
  return std::move(one.item);
}

namespace {

bool write_one(Backend& backend, std::string_view key, const Item& item, Ttl ttl, Fence fence,
               const Request& request) {
  KeyWrite one{.key = key, .item = &item, .ttl = ttl, .fence = fence};
  backend.write({&one, 1}, request);
  return one.stored;
}

}  // namespace

void Backend::set(std::string_view key, const Item& item, Ttl ttl, const Request& request) {
  if (!write_one(*this, key, item, ttl, Fence{}, request)) {
    throw BackendError("set of key " + std::string(key) + ": not stored", {}, "NOT_STORED");
  }
}

bool Backend::add(std::string_view key, const Item& item, Ttl ttl, const Request& request) {
  return write_one(*this, key, item, ttl, Fence{Fence::Kind::absent, 0}, request);
}

bool Backend::cas(std::string_view key, const Item& item, Ttl ttl, Cas version,
                  const Request& request) {
  return write_one(*this, key, item, ttl, Fence{Fence::Kind::version, version}, request);
}

bool Backend::remove(std::string_view key, const Request& request) {
  KeyErase one{.key = key};
  erase({&one, 1}, request);
  return one.existed;
}

std::vector<std::optional<Item>> Backend::get_multi(std::span<const std::string_view> keys,
                                                    const Request& request) {
  std::vector<KeyRead> reads(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) reads[i].key = keys[i];
  read(reads, LeaseRequest{}, request);
  std::vector<std::optional<Item>> items;
  items.reserve(keys.size());
  for (auto& r : reads) items.push_back(std::move(r.item));
  return items;
}

void Backend::set_multi(std::span<const KeyedItem> items, Ttl ttl, const Request& request) {
  std::vector<KeyWrite> writes(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    writes[i] = KeyWrite{.key = items[i].key, .item = items[i].item, .ttl = ttl};
  }
  write(writes, request);
}

void Backend::remove_multi(std::span<const std::string_view> keys, const Request& request) {
  std::vector<KeyErase> erases(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) erases[i].key = keys[i];
  erase(erases, request);
}

}  // namespace dogpile
