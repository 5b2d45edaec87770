// SPDX-License-Identifier: MIT
#include "engine/local_store.hpp"

#include <algorithm>
#include <vector>

namespace dogpile::detail {

namespace {
// The heap blocks behind one entry, as glibc's allocator rounds them: the
// map's node, the item with its shared count, and the key and the item's
// bytes where they do not fit in their strings; plus the map's bucket.
constexpr std::size_t block(std::size_t bytes) noexcept { return (bytes + 8 + 15) / 16 * 16; }
constexpr std::size_t kSmallString = 15;  // libstdc++ keeps up to 15 chars inline

std::atomic<std::uint64_t> next_store_id{1};

// A thread's front (see the header): items it last found, by key hash.
struct FrontSlot {
  std::uint64_t store = 0;  // 0: empty
  std::uint64_t epoch = 0;
  std::size_t hash = 0;
  SteadyTime until{};
  std::uint32_t hits = 0;  // front hits since the store last counted the key
  std::uint64_t used = 0;  // the front's tick at its last hit or fill
  std::string key;
  std::shared_ptr<const Item> item;
};
struct Front {
  // Two ways a set: keys whose hashes meet in a set do not evict each other.
  static constexpr std::size_t kSets = 128;
  std::array<FrontSlot, 2 * kSets> slots;
  std::uint64_t tick = 0;
  // Items let go of by the front (a slot refilled, or an item too large to
  // keep there): while a borrow scope is open (depth > 0) all of them, so
  // that what was borrowed stays valid however often a codec run inside
  // borrows again; outside one, the last (valid until the next borrow).
  std::vector<std::shared_ptr<const Item>> retired;
  int depth = 0;
  void retire(std::shared_ptr<const Item> item) {
    if (!item) return;
    if (depth == 0) retired.clear();
    retired.push_back(std::move(item));
  }
};
thread_local Front front;
}  // namespace

std::size_t LocalStore::cost(std::string_view key, const Item& item) noexcept {
  const std::size_t node = block(sizeof(void*) + sizeof(Node) + sizeof(std::size_t));
  const std::size_t shared = block(sizeof(Item) + 16);
  const std::size_t key_bytes = key.size() > kSmallString ? block(key.size() + 1) : 0;
  const std::size_t data = item.data.size() > kSmallString ? block(item.data.capacity() + 1) : 0;
  return node + shared + key_bytes + data + sizeof(void*);
}

LocalStore::LocalStore(std::size_t max_entries, std::size_t max_bytes, bool admission)
    : id_(next_store_id.fetch_add(1, std::memory_order_relaxed)),
      max_entries_(max_entries == 0 ? 0 : std::max<std::size_t>(1, max_entries / kShards)),
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
  samples.store(0, std::memory_order_relaxed);
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

bool LocalStore::Sketch::add(std::size_t hash, std::uint32_t lookups) noexcept {
  const Place p = place(hash, mask);
  std::uint8_t* block = counts.data() + p.block * kBlock;
  for (std::size_t r = 0; r < kRows; ++r) {
    std::atomic_ref c(block[r * 16 + ((p.in_rows >> (4 * r)) & 15)]);
    const unsigned seen = c.load(std::memory_order_relaxed);
    if (seen < 15) {
      c.store(static_cast<std::uint8_t>(std::min<unsigned>(15, seen + lookups)),
              std::memory_order_relaxed);
    }
  }
  const std::size_t before = samples.fetch_add(lookups, std::memory_order_relaxed);
  return before < period && before + lookups >= period;
}

void LocalStore::Sketch::halve() noexcept {
  // Age: what was asked for long ago counts half.
  if (samples.load(std::memory_order_relaxed) < period) return;  // another halved
  for (auto& c : counts) {
    std::atomic_ref r(c);
    r.store(static_cast<std::uint8_t>(r.load(std::memory_order_relaxed) >> 1),
            std::memory_order_relaxed);
  }
  samples.store(samples.load(std::memory_order_relaxed) / 2, std::memory_order_relaxed);
}

unsigned LocalStore::Sketch::estimate(std::size_t hash) const noexcept {
  const Place p = place(hash, mask);
  const std::uint8_t* block = counts.data() + p.block * kBlock;
  unsigned least = 15;
  for (std::size_t r = 0; r < kRows; ++r) {
    std::atomic_ref c(const_cast<std::uint8_t&>(block[r * 16 + ((p.in_rows >> (4 * r)) & 15)]));
    least = std::min<unsigned>(least, c.load(std::memory_order_relaxed));
  }
  return least;
}

unsigned LocalStore::frequency(std::string_view key) const {
  if (!admission_) return 0;
  const Shard& shard = shard_of(key);
  std::shared_lock lock(shard.mutex);
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
  e.linked = ++shard.links;
}

void LocalStore::drop(Shard& shard, Map::iterator it) {
  shard.epoch.fetch_add(1, std::memory_order_release);  // the fronts let it go
  held_.fetch_sub(1, std::memory_order_relaxed);
  shard.bytes -= it->second.size;
  unlink(shard, *it);
  shard.entries.erase(it);
}

bool LocalStore::insert(Shard& shard, std::string_view key, std::shared_ptr<const Item> item,
                        SteadyTime until, Cas version, bool admit, std::size_t extra) {
  if (auto it = shard.entries.find(key); it != shard.entries.end()) {
    drop(shard, it);
    admit = false;  // it was held: it replaces itself
  }
  const std::size_t size = cost(key, *item) + extra;
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
                          SteadyTime until, std::uint64_t seen, Cas version, std::size_t extra) {
  if (!item || max_entries_ == 0) return;
  Shard& shard = shard_of(key);
  std::lock_guard lock(shard.mutex);
  if (shard.writes.load(std::memory_order_relaxed) != seen) return;  // a write came between
  if (auto it = shard.entries.find(key); it != shard.entries.end() && now < it->second.until) {
    return;  // another fill was first
  }
  (void)insert(shard, key, std::move(item), until, version, true, extra);
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
  return lookup(shards_[hash % kShards], hash, key, now, writes, 1, nullptr, nullptr);
}

LocalStore::BorrowScope::BorrowScope() noexcept { ++front.depth; }

LocalStore::BorrowScope::~BorrowScope() {
  if (--front.depth == 0) front.retired.clear();
}

const Item* LocalStore::borrow(std::string_view key, SteadyTime now, std::uint64_t* writes) {
  if (max_entries_ == 0) return nullptr;
  const std::size_t hash = Hash{}(key);
  Shard& shard = shards_[hash % kShards];
  const std::size_t set = 2 * ((hash * 0x9E3779B97F4A7C15ULL) >> 57);  // 128 sets
  FrontSlot* f = &front.slots[set];
  bool mine = f->store == id_ && f->hash == hash && f->key == key;
  if (!mine) {
    FrontSlot* other = &front.slots[set + 1];
    mine = other->store == id_ && other->hash == hash && other->key == key;
    if (mine || other->used < f->used) f = other;  // else the way used least lately
  }
  if (mine && now < f->until && f->epoch == shard.epoch.load(std::memory_order_acquire) &&
      ++f->hits < kFrontPass) {
    f->used = ++front.tick;
    if (writes != nullptr) *writes = shard.writes.load(std::memory_order_acquire);
    return f->item.get();
  }
  std::uint64_t epoch = 0;
  SteadyTime until{};
  auto item = lookup(shard, hash, key, now, writes, mine ? std::max<std::uint32_t>(f->hits, 1) : 1,
                     &epoch, &until);
  if (!item) {
    if (mine) {
      front.retire(std::move(f->item));
      f->store = 0;
    }
    return nullptr;
  }
  if (item->data.size() > kFrontBytes) {  // not kept in the front: held by `retired`
    const Item* borrowed = item.get();
    front.retire(std::move(item));
    return borrowed;
  }
  front.retire(std::move(f->item));
  f->store = id_;
  f->epoch = epoch;
  f->hash = hash;
  f->until = until;
  f->hits = 0;
  f->used = ++front.tick;
  f->key.assign(key);
  f->item = std::move(item);
  return f->item.get();
}

std::shared_ptr<const Item> LocalStore::lookup(Shard& shard, std::size_t hash, std::string_view key,
                                               SteadyTime now, std::uint64_t* writes,
                                               std::uint32_t lookups, std::uint64_t* epoch,
                                               SteadyTime* until) {
  std::shared_ptr<const Item> item;
  bool relink = false;
  bool expired = false;
  bool halve = false;
  {
    std::shared_lock lock(shard.mutex);
    if (writes != nullptr) *writes = shard.writes.load(std::memory_order_relaxed);
    if (epoch != nullptr) *epoch = shard.epoch.load(std::memory_order_relaxed);
    if (admission_) halve = shard.sketch.add(hash, lookups);
    if (auto it = shard.entries.find(key); it != shard.entries.end()) {
      if (now < it->second.until) {
        item = it->second.item;
        if (until != nullptr) *until = it->second.until;
        // A front's pass (many lookups at once): not moved while among the
        // newest quarter of the shard's links; a single lookup: exact LRU.
        relink = shard.newest != &*it &&
                 (lookups == 1 || shard.links - it->second.linked > max_entries_ / 4);
      } else {
        expired = it->second.version == 0;  // else kept for expired()
      }
    }
  }
  if (relink || expired || halve) {
    after_hit(shard, key, item.get(), now, relink, halve);
  }
  return item;
}

void LocalStore::after_hit(Shard& shard, std::string_view key, const Item* item, SteadyTime now,
                           bool relink, bool halve) {
  std::lock_guard lock(shard.mutex);
  if (halve) shard.sketch.halve();
  auto it = shard.entries.find(key);
  if (it == shard.entries.end()) return;
  if (relink) {
    if (it->second.item.get() == item && shard.newest != &*it) {
      unlink(shard, *it);
      link_newest(shard, *it);
    }
  } else if (now >= it->second.until && it->second.version == 0) {
    drop(shard, it);
  }
}

LocalStore::Expired LocalStore::expired(std::string_view key, SteadyTime now) {
  if (max_entries_ == 0) return {};
  Shard& shard = shard_of(key);
  std::shared_lock lock(shard.mutex);
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
    shard.epoch.fetch_add(1, std::memory_order_release);
    held_.fetch_sub(shard.entries.size(), std::memory_order_relaxed);
    shard.entries.clear();
    shard.newest = shard.oldest = nullptr;
    shard.bytes = 0;
  }
}

std::size_t LocalStore::entries() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::shared_lock lock(shard.mutex);
    n += shard.entries.size();
  }
  return n;
}

std::size_t LocalStore::bytes() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::shared_lock lock(shard.mutex);
    n += shard.bytes;
  }
  return n;
}

void LocalStore::after_fork_in_child() noexcept {
  for (auto& shard : shards_) new (&shard.mutex) std::shared_mutex;
}

}  // namespace dogpile::detail
