#include "dogpile/backend.hpp"

#include <algorithm>
#include <chrono>
#include <thread>

namespace dogpile {

bool DistributedLock::try_lock() {
  if (!threads_.try_lock()) return false;
  bool taken = false;
  try {
    taken = try_acquire();
  } catch (...) {
    threads_.unlock();
    throw;
  }
  if (!taken) {
    threads_.unlock();
    return false;
  }
  held_ = true;
  return true;
}

void DistributedLock::lock() {
  threads_.lock();
  try {
    auto pause = std::chrono::milliseconds(1);
    while (!try_acquire()) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
  } catch (...) {
    threads_.unlock();
    throw;
  }
  held_ = true;
}

bool DistributedLock::release() {
  if (!held_) return false;
  held_ = false;
  struct UnlockOnExit {
    std::mutex& m;
    ~UnlockOnExit() { m.unlock(); }
  } unlock_threads{threads_};
  return release_acquired();
}

void DistributedLock::unlock() noexcept {
  try {
    release();
  } catch (...) {
    // The lock expires on its own after ttl().
  }
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
