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

bool DistributedLock::try_lock() {
  if (!claim()) return false;
  bool taken = false;
  try {
    taken = try_acquire();
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
    while (!try_acquire()) {
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

bool DistributedLock::release() {
  if (!held_) return false;
  const bool was_held = release_acquired();  // throws: still held, may be tried again
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

bool Backend::get_view(std::string_view key,
                       detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  const auto item = get(key);
  if (!item) return false;
  visit(item->data, item->flags);
  return true;
}

std::vector<std::optional<Item>> Backend::get_multi(std::span<const std::string_view> keys) {
  std::vector<std::optional<Item>> items;
  items.reserve(keys.size());
  for (auto key : keys) items.push_back(get(key));
  return items;
}

void Backend::set_multi(std::span<const KeyedItem> items, Ttl ttl) {
  for (const auto& each : items) set(each.key, *each.item, ttl);
}

void Backend::remove_multi(std::span<const std::string_view> keys) {
  for (auto key : keys) remove(key);
}

std::optional<Item> Backend::gets(std::string_view key, Cas& cas) {
  cas = 0;
  return get(key);
}

bool Backend::cas(std::string_view key, const Item&, Ttl, Cas) {
  throw BackendError(std::string("this backend reports versions but cannot store by version (cas) "
                                 "for key ") +
                     std::string(key));
}

bool Backend::read_view(LeaseSlot& slot, const LeaseRequest&,
                        detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  slot.cas = 0;
  slot.lease = LeaseState::unknown;
  return get_view(slot.key, visit);
}

void Backend::read(std::span<LeaseSlot> slots, const LeaseRequest&) {
  std::vector<std::string_view> keys;
  keys.reserve(slots.size());
  for (const auto& slot : slots) keys.push_back(slot.key);
  auto items = get_multi(keys);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    slots[i].item = i < items.size() ? std::move(items[i]) : std::nullopt;
    slots[i].cas = 0;
    slots[i].lease = LeaseState::unknown;
  }
}

void Backend::claim(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  for (auto& slot : slots) {
    auto lock = make_lock(slot.key, request.ttl);
    if (lock->try_lock()) {
      slot.lock = std::move(lock);
      slot.lease = LeaseState::won;
    } else {
      slot.lease = LeaseState::held;
    }
  }
}

namespace {

// The fence for a store after reading `item` at version `cas` under the lease.
Fence fence_after(const std::optional<Item>& item, Cas cas) {
  if (!item) return Fence{Fence::Kind::absent, 0};
  if (cas != 0) return Fence{Fence::Kind::version, cas};
  return Fence{};  // a backend without versions: the store replaces what is there
}

}  // namespace

void Backend::confirm(std::span<LeaseSlot> slots) {
  for (auto& slot : slots) {
    Cas version = 0;
    slot.item = gets(slot.key, version);
    slot.cas = version;
    slot.fence = fence_after(slot.item, version);
  }
}

void Backend::poll(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  for (auto& slot : slots) {
    Cas version = 0;
    slot.item = gets(slot.key, version);
    slot.cas = version;
    if (slot.item) {
      slot.lease = LeaseState::unknown;
      continue;
    }
    // No way to ask whether the lock is held but to try it.
    auto lock = make_lock(slot.key, request.ttl);
    if (lock->try_lock()) {
      slot.lock = std::move(lock);
      slot.lease = LeaseState::won;
      slot.fence = fence_after(slot.item, version);
    } else {
      slot.lease = LeaseState::held;
    }
  }
}

void Backend::store(std::span<LeaseSlot> slots) {
  for (auto& slot : slots) {
    if (slot.value == nullptr) continue;
    switch (slot.fence.kind) {
      case Fence::Kind::absent:
        slot.stored = add(slot.key, *slot.value, slot.ttl);
        break;
      case Fence::Kind::version:
        slot.stored = cas(slot.key, *slot.value, slot.ttl, slot.fence.version);
        break;
      case Fence::Kind::none:
        set(slot.key, *slot.value, slot.ttl);
        slot.stored = true;
        break;
    }
  }
}

void Backend::release(std::span<LeaseSlot> slots) {
  for (auto& slot : slots) {
    if (!slot.lock) continue;
    slot.lost = !slot.lock->release();
  }
}

std::optional<ServerTime> Backend::server_time(std::string_view) { return std::nullopt; }

bool Backend::mark_stale(std::string_view, Ttl) {
  throw std::logic_error("this backend cannot mark an item stale in place");
}

}  // namespace dogpile

#include "transport/deadline.hpp"

namespace dogpile {
namespace detail {
namespace {
thread_local std::optional<Steady::time_point> current_deadline;
}  // namespace

std::optional<Steady::time_point> request_deadline() noexcept { return current_deadline; }

DeadlineScope::DeadlineScope(std::optional<Steady::time_point> deadline) noexcept
    : previous_(current_deadline) {
  if (deadline && (!current_deadline || *deadline < *current_deadline)) current_deadline = deadline;
}

DeadlineScope::~DeadlineScope() { current_deadline = previous_; }

}  // namespace detail

std::optional<std::chrono::steady_clock::time_point> request_deadline() noexcept {
  return detail::request_deadline();
}

}  // namespace dogpile
