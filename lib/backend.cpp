#include "dogpile/backend.hpp"

#include <algorithm>
#include <chrono>
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
  held_ = false;
  struct FreeOnExit {
    std::atomic<bool>& busy;
    ~FreeOnExit() {
      busy.store(false, std::memory_order_release);
      busy.notify_one();
    }
  } free_on_exit{busy_};
  return release_acquired();
}

void DistributedLock::unlock() noexcept {
  try {
    release();
  } catch (...) {
    // The lock expires on its own after ttl().
  }
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

}  // namespace dogpile
