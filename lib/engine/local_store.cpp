// SPDX-License-Identifier: MIT
#include "engine/local_store.hpp"

#include <algorithm>

namespace dogpile::detail {

namespace {
// The heap blocks behind one entry, as glibc's allocator rounds them: the
// map's node, the item with its shared count, and the key and the item's
// bytes where they do not fit in their strings; plus the map's bucket.
constexpr std::size_t block(std::size_t bytes) noexcept { return (bytes + 8 + 15) / 16 * 16; }
constexpr std::size_t kSmallString = 15;  // libstdc++ keeps up to 15 chars inline
}  // namespace

std::size_t LocalStore::cost(std::string_view key, const Item& item) noexcept {
  const std::size_t node = block(sizeof(void*) + sizeof(Node) + sizeof(std::size_t));
  const std::size_t shared = block(sizeof(Item) + 16);
  const std::size_t key_bytes = key.size() > kSmallString ? block(key.size() + 1) : 0;
  const std::size_t data = item.data.size() > kSmallString ? block(item.data.capacity() + 1) : 0;
  return node + shared + key_bytes + data + sizeof(void*);
}

LocalStore::LocalStore(std::size_t max_entries, std::size_t max_bytes, bool admission)
    : max_entries_(max_entries == 0 ? 0 : std::max<std::size_t>(1, max_entries / kShards)),
      max_bytes_(std::max<std::size_t>(1, max_bytes / kShards)),
      admission_(admission && max_entries_ != 0) {
  if (admission_) {
    for (auto& shard : shards_) shard.sketch.size_for(max_entries_);
  }
}

void LocalStore::Sketch::size_for(std::size_t entries) {
  // Blocks of 64 counters (a cache line): a key's four counters are in one
  // block, 16 a row; a block for every 4 entries, so a row is four times as
  // wide as the shard holds entries (about 16 bytes an entry).
  std::size_t blocks = 1;
  while (blocks * 4 < entries && blocks < (std::size_t{1} << 20)) blocks *= 2;
  counts.assign(blocks * kBlock, 0);
  mask = blocks - 1;
  // Halved every 20 lookups an entry: long enough to tell the hot from the
  // scanned (10 kept 5 points of hit ratio where 20 kept 7, bench admission).
  period = std::max<std::size_t>(entries * 20, 64);
}

namespace {
// A key's block, and its counter in each row of the block: bits of its hash
// mixed again (the low bits of the hash pick its shard: all of them vary
// here, so that a shard's keys spread over all of its counters).
struct Place {
  std::size_t block;
  std::uint64_t in_rows;  // 4 bits a row
};
inline Place place(std::size_t hash, std::size_t mask) noexcept {
  const auto h = static_cast<std::uint64_t>(hash);
  const std::uint64_t a = h * 0xFF51AFD7ED558CCDULL;
  const std::uint64_t b = (h ^ (h >> 29)) * 0x9E3779B97F4A7C15ULL;
  return {static_cast<std::size_t>(a >> 24) & mask, b >> 40};
}
}  // namespace

void LocalStore::Sketch::add(std::size_t hash) noexcept {
  const Place p = place(hash, mask);
  std::uint8_t* block = counts.data() + p.block * kBlock;
  for (std::size_t r = 0; r < kRows; ++r) {
    std::uint8_t& c = block[r * 16 + ((p.in_rows >> (4 * r)) & 15)];
    if (c < 15) ++c;
  }
  if (++samples >= period) {  // age: what was asked for long ago counts half
    for (auto& c : counts) c = static_cast<std::uint8_t>(c >> 1);
    samples /= 2;
  }
}

unsigned LocalStore::Sketch::estimate(std::size_t hash) const noexcept {
  const Place p = place(hash, mask);
  const std::uint8_t* block = counts.data() + p.block * kBlock;
  unsigned least = 15;
  for (std::size_t r = 0; r < kRows; ++r) {
    least = std::min<unsigned>(least, block[r * 16 + ((p.in_rows >> (4 * r)) & 15)]);
  }
  return least;
}

unsigned LocalStore::frequency(std::string_view key) const {
  if (!admission_) return 0;
  const Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  return shard.sketch.estimate(Hash{}(key));
}

LocalStore::~LocalStore() = default;

LocalStore::Shard& LocalStore::shard_of(std::string_view key) noexcept {
  return shards_[Hash{}(key) % kShards];
}

const LocalStore::Shard& LocalStore::shard_of(std::string_view key) const noexcept {
  return shards_[Hash{}(key) % kShards];
}

void LocalStore::unlink(Shard& shard, Node& node) noexcept {
  Entry& e = node.second;
  (e.newer != nullptr ? e.newer->second.older : shard.newest) = e.older;
  (e.older != nullptr ? e.older->second.newer : shard.oldest) = e.newer;
  e.newer = e.older = nullptr;
}

void LocalStore::link_newest(Shard& shard, Node& node) noexcept {
  Entry& e = node.second;
  e.newer = nullptr;
  e.older = shard.newest;
  (shard.newest != nullptr ? shard.newest->second.newer : shard.oldest) = &node;
  shard.newest = &node;
}

void LocalStore::drop(Shard& shard, Map::iterator it) {
  held_.fetch_sub(1, std::memory_order_relaxed);
  shard.bytes -= it->second.size;
  unlink(shard, *it);
  shard.entries.erase(it);
}

bool LocalStore::insert(Shard& shard, std::string_view key, std::shared_ptr<const Item> item,
                        SteadyTime until, Cas version, bool admit) {
  if (auto it = shard.entries.find(key); it != shard.entries.end()) {
    drop(shard, it);
    admit = false;  // it was held: it replaces itself
  }
  const std::size_t size = cost(key, *item);
  if (size > max_bytes_) return false;  // larger than the shard's whole share
  // Admission: a fill that would evict goes in only if asked for more often
  // than the item it would evict first.
  if (admit && admission_ && shard.oldest != nullptr &&
      (shard.entries.size() >= max_entries_ || shard.bytes + size > max_bytes_) &&
      shard.sketch.estimate(Hash{}(key)) <= shard.sketch.estimate(Hash{}(shard.oldest->first))) {
    return false;
  }
  while (shard.oldest != nullptr &&
         (shard.entries.size() >= max_entries_ || shard.bytes + size > max_bytes_)) {
    drop(shard, shard.entries.find(shard.oldest->first));
  }
  auto [it, inserted] = shard.entries.try_emplace(std::string(key));
  it->second.item = std::move(item);
  it->second.until = until;
  it->second.version = version;
  it->second.size = size;
  link_newest(shard, *it);
  held_.fetch_add(1, std::memory_order_relaxed);
  shard.bytes += size;
  return true;
}

void LocalStore::put_written(std::string_view key, std::shared_ptr<const Item> item,
                             SteadyTime until) {
  if (max_entries_ == 0) return;
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  shard.writes.fetch_add(1, std::memory_order_relaxed);
  if (item) {
    (void)insert(shard, key, std::move(item), until);
  } else if (auto it = shard.entries.find(key); it != shard.entries.end()) {
    drop(shard, it);
  }
}

void LocalStore::update(std::string_view key, std::shared_ptr<const Item> item, SteadyTime until) {
  if (max_entries_ == 0) return;
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto it = shard.entries.find(key);
  if (it == shard.entries.end()) return;
  shard.writes.fetch_add(1, std::memory_order_relaxed);
  if (item) {
    (void)insert(shard, key, std::move(item), until);
  } else {
    drop(shard, it);
  }
}

std::uint64_t LocalStore::writes(std::string_view key) const noexcept {
  return shard_of(key).writes.load(std::memory_order_acquire);
}

void LocalStore::put_read(std::string_view key, std::shared_ptr<const Item> item, SteadyTime now,
                          SteadyTime until, std::uint64_t seen, Cas version) {
  if (!item || max_entries_ == 0) return;
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  if (shard.writes.load(std::memory_order_relaxed) != seen) return;  // a write came between
  if (auto it = shard.entries.find(key); it != shard.entries.end() && now < it->second.until) {
    return;  // another fill was first
  }
  (void)insert(shard, key, std::move(item), until, version, true);
}

void LocalStore::discard(std::string_view key, const Item* item) {
  if (max_entries_ == 0) return;
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  if (auto it = shard.entries.find(key);
      it != shard.entries.end() && it->second.item.get() == item) {
    drop(shard, it);
  }
}

std::shared_ptr<const Item> LocalStore::get(std::string_view key, SteadyTime now,
                                            std::uint64_t* writes) {
  if (max_entries_ == 0) return nullptr;
  const std::size_t hash = Hash{}(key);
  Shard& shard = shards_[hash % kShards];
  std::lock_guard lock(shard.mutex);
  if (writes != nullptr) *writes = shard.writes.load(std::memory_order_relaxed);
  if (admission_) shard.sketch.add(hash);
  auto it = shard.entries.find(key);
  if (it == shard.entries.end()) return nullptr;
  if (now >= it->second.until) {
    if (it->second.version == 0) drop(shard, it);  // else kept for expired()
    return nullptr;
  }
  if (shard.newest != &*it) {
    unlink(shard, *it);
    link_newest(shard, *it);
  }
  return it->second.item;
}

LocalStore::Expired LocalStore::expired(std::string_view key, SteadyTime now) {
  if (max_entries_ == 0) return {};
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto it = shard.entries.find(key);
  if (it == shard.entries.end() || now < it->second.until || it->second.version == 0) return {};
  return {it->second.item, it->second.version};
}

bool LocalStore::renew(std::string_view key, const Item* item, SteadyTime until) {
  if (max_entries_ == 0) return false;
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  auto it = shard.entries.find(key);
  if (it == shard.entries.end() || it->second.item.get() != item) return false;
  it->second.until = until;
  if (shard.newest != &*it) {
    unlink(shard, *it);
    link_newest(shard, *it);
  }
  return true;
}

void LocalStore::erase(std::string_view key) {
  if (max_entries_ == 0) return;
  put_written(key, nullptr, SteadyTime{});
}

void LocalStore::clear() {
  for (auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    shard.writes.fetch_add(1, std::memory_order_relaxed);
    held_.fetch_sub(shard.entries.size(), std::memory_order_relaxed);
    shard.entries.clear();
    shard.newest = shard.oldest = nullptr;
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
