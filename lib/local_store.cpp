#include "local_store.hpp"

#include <algorithm>
#include <functional>

namespace dogpile::detail {

namespace {
// What an entry costs: its item's bytes, its key, and the bookkeeping.
std::size_t cost(std::string_view key, const Item& item) {
  return item.data.size() + 2 * key.size() + 128;
}
}  // namespace

LocalStore::LocalStore(std::size_t max_entries, std::size_t max_bytes)
    : max_entries_(max_entries == 0 ? 0 : std::max<std::size_t>(1, max_entries / kShards)),
      max_bytes_(std::max<std::size_t>(1, max_bytes / kShards)) {}

LocalStore::Shard& LocalStore::shard_of(std::string_view key) {
  return shards_[std::hash<std::string_view>{}(key) % kShards];
}

void LocalStore::drop(Shard& shard, std::unordered_map<std::string, Entry>::iterator it) {
  shard.bytes -= it->second.size;
  shard.order.erase(it->second.position);
  shard.entries.erase(it);
}

void LocalStore::put(std::string_view key, std::shared_ptr<const Item> item, SteadyTime until) {
  if (!item || max_entries_ == 0) return;
  const std::size_t size = cost(key, *item);
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  if (auto it = shard.entries.find(std::string(key)); it != shard.entries.end()) drop(shard, it);
  if (size > max_bytes_) return;  // larger than the shard's whole share
  while (!shard.order.empty() &&
         (shard.entries.size() >= max_entries_ || shard.bytes + size > max_bytes_)) {
    drop(shard, shard.entries.find(shard.order.back()));
  }
  shard.order.emplace_front(key);
  shard.entries.emplace(std::string(key),
                        Entry{std::move(item), until, shard.order.begin(), size});
  shard.bytes += size;
}

std::shared_ptr<const Item> LocalStore::get(std::string_view key, SteadyTime now) {
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto it = shard.entries.find(std::string(key));
  if (it == shard.entries.end()) return nullptr;
  if (now >= it->second.until) {
    drop(shard, it);
    return nullptr;
  }
  shard.order.splice(shard.order.begin(), shard.order, it->second.position);
  return it->second.item;
}

void LocalStore::erase(std::string_view key) {
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  if (auto it = shard.entries.find(std::string(key)); it != shard.entries.end()) drop(shard, it);
}

void LocalStore::clear() {
  for (auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    shard.entries.clear();
    shard.order.clear();
    shard.bytes = 0;
  }
}

std::size_t LocalStore::entries() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.entries.size();
  }
  return n;
}

std::size_t LocalStore::bytes() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.bytes;
  }
  return n;
}

void LocalStore::after_fork_in_child() noexcept {
  for (auto& shard : shards_) new (&shard.mutex) std::mutex;
}

}  // namespace dogpile::detail
