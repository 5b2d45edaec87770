// SPDX-License-Identifier: MIT
#include "engine/held_elsewhere.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <new>
#include <vector>

namespace dogpile::detail {

HeldElsewhere::Shard& HeldElsewhere::shard_for(std::string_view key) noexcept {
  const auto mixed =
      static_cast<std::uint64_t>(std::hash<std::string_view>{}(key)) * 0x9E3779B97F4A7C15ull;
  return shards_[mixed >> 60];
}

bool HeldElsewhere::held(std::string_view key, SteadyTime now) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  const auto it = shard.until.find(std::string(key));
  if (it == shard.until.end()) return false;
  if (it->second > now) return true;
  shard.until.erase(it);
  return false;
}

void HeldElsewhere::remember(std::string_view key, SteadyTime until) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  if (shard.until.size() >= kCapacity && !shard.until.contains(std::string(key))) {
    // Full: drop the half that ends first (expired ones end first of all).
    // One pass per kCapacity / 2 keys remembered: O(1) a key, amortized (a
    // scan for the single earliest on every key of a full shard made a
    // stale herd over many keys pay a thousand comparisons per call).
    std::vector<SteadyTime> ends;
    ends.reserve(shard.until.size());
    for (const auto& [k, t] : shard.until) ends.push_back(t);
    const auto middle = ends.begin() + static_cast<std::ptrdiff_t>(ends.size() / 2);
    std::nth_element(ends.begin(), middle, ends.end());
    const SteadyTime cut = *middle;
    std::erase_if(shard.until, [&](const auto& entry) { return entry.second <= cut; });
  }
  shard.until.insert_or_assign(std::string(key), until);
}

void HeldElsewhere::forget(std::string_view key) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  shard.until.erase(std::string(key));
}

std::size_t HeldElsewhere::size() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.until.size();
  }
  return n;
}

void HeldElsewhere::reset_after_fork() noexcept {
  for (auto& shard : shards_) new (&shard.mutex) std::mutex;
}

}  // namespace dogpile::detail
