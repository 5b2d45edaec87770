#include "dogpile/memory.hpp"

#include <array>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "dogpile/detail/keys.hpp"
#include "lock_token.hpp"

namespace dogpile {
namespace {

struct Entry {
  Item item;
  std::optional<TimePoint> expires_at;  // nullopt: never
};

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

struct Shard {
  mutable std::mutex mutex;
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>> entries;
  std::size_t inserts_since_sweep = 0;
  std::size_t kept_by_last_sweep = 0;
};

}  // namespace

struct MemoryBackend::State {
  explicit State(const Clock* c) : clock(c != nullptr ? c : &system_clock()) {}

  const Clock* clock;
  std::array<Shard, 16> shards;

  struct AtomicCounters {
    std::atomic<std::uint64_t> gets{0}, get_multis{0}, sets{0}, adds{0}, removes{0},
        lock_releases{0}, lock_extends{0};
  } counters;

  static void count(std::atomic<std::uint64_t>& c) noexcept {
    c.fetch_add(1, std::memory_order_relaxed);
  }

  Shard& shard_for(std::string_view key) noexcept {
    const auto mixed = static_cast<std::uint64_t>(StringHash{}(key)) * 0x9E3779B97F4A7C15ull;
    return shards[mixed >> 60];
  }

  static bool expired(const Entry& e, TimePoint now) noexcept {
    return e.expires_at && now >= *e.expires_at;
  }

  std::optional<TimePoint> expiry(Ttl ttl, TimePoint now) const noexcept {
    if (ttl <= Ttl::zero()) return std::nullopt;
    return now + ttl;
  }

  // The live entry under `key`, dropping an expired one. Shard mutex held.
  Entry* find_live(Shard& shard, std::string_view key, TimePoint now) {
    auto it = shard.entries.find(key);
    if (it == shard.entries.end()) return nullptr;
    if (expired(it->second, now)) {
      shard.entries.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  // Stores an entry; sweeps the shard's expired entries once the inserts
  // since the last sweep outnumber what that sweep kept, so items that are
  // never read again do not accumulate, at amortized O(1) per insert.
  // Shard mutex held.
  void put(Shard& shard, std::string_view key, Entry entry, TimePoint now) {
    shard.entries.insert_or_assign(std::string(key), std::move(entry));
    if (++shard.inserts_since_sweep > std::max<std::size_t>(64, shard.kept_by_last_sweep)) {
      std::erase_if(shard.entries, [&](const auto& kv) { return expired(kv.second, now); });
      shard.inserts_since_sweep = 0;
      shard.kept_by_last_sweep = shard.entries.size();
    }
  }

  std::optional<Item> get(std::string_view key) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    if (Entry* e = find_live(shard, key, now)) return e->item;
    return std::nullopt;
  }

  void set(std::string_view key, const Item& item, Ttl ttl) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    put(shard, key, Entry{item, expiry(ttl, now)}, now);
  }

  bool add(std::string_view key, const Item& item, Ttl ttl) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    if (find_live(shard, key, now) != nullptr) return false;
    put(shard, key, Entry{item, expiry(ttl, now)}, now);
    return true;
  }

  bool remove(std::string_view key) {
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    auto it = shard.entries.find(key);
    if (it == shard.entries.end()) return false;
    const bool live = !expired(it->second, clock->now());
    shard.entries.erase(it);
    return live;
  }

  // Applies `fn` to the live entry under `key` if it holds `token`.
  template <class Fn>
  bool if_owned(std::string_view key, std::string_view token, Fn fn) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    Entry* e = find_live(shard, key, now);
    if (e == nullptr || e->item.data != token) return false;
    fn(shard, *e, now);
    return true;
  }
};

namespace {

class MemoryLock final : public DistributedLock {
 public:
  MemoryLock(std::shared_ptr<MemoryBackend::State> state, std::string key, Ttl ttl)
      : state_(std::move(state)), key_(std::move(key)), ttl_(ttl) {}

  ~MemoryLock() override { release_if_held(); }

  bool extend() override {
    if (token_.empty()) return false;
    MemoryBackend::State::count(state_->counters.lock_extends);
    return state_->if_owned(key_, token_, [&](Shard&, Entry& e, TimePoint now) {
      e.expires_at = state_->expiry(ttl_, now);
    });
  }

  Ttl ttl() const noexcept override { return ttl_; }

 protected:
  bool try_acquire() override {
    MemoryBackend::State::count(state_->counters.adds);
    std::string token = detail::new_lock_token();
    if (!state_->add(key_, Item{token, 0}, ttl_)) return false;
    token_ = std::move(token);
    return true;
  }

  bool release_acquired() override {
    if (token_.empty()) return false;
    MemoryBackend::State::count(state_->counters.lock_releases);
    const std::string token = std::exchange(token_, {});
    return state_->if_owned(key_, token, [&](Shard& shard, Entry&, TimePoint) {
      shard.entries.erase(shard.entries.find(std::string_view(key_)));
    });
  }

 private:
  std::shared_ptr<MemoryBackend::State> state_;
  std::string key_;
  Ttl ttl_;
  std::string token_;  // empty when not held
};

}  // namespace

MemoryBackend::MemoryBackend() : MemoryBackend(Options{}) {}
MemoryBackend::MemoryBackend(Options options) : state_(std::make_shared<State>(options.clock)) {}
MemoryBackend::~MemoryBackend() = default;

std::optional<Item> MemoryBackend::get(std::string_view key) {
  State::count(state_->counters.gets);
  return state_->get(key);
}

void MemoryBackend::set(std::string_view key, const Item& item, Ttl ttl) {
  State::count(state_->counters.sets);
  state_->set(key, item, ttl);
}

bool MemoryBackend::add(std::string_view key, const Item& item, Ttl ttl) {
  State::count(state_->counters.adds);
  return state_->add(key, item, ttl);
}

bool MemoryBackend::remove(std::string_view key) {
  State::count(state_->counters.removes);
  return state_->remove(key);
}

std::vector<std::optional<Item>> MemoryBackend::get_multi(std::span<const std::string_view> keys) {
  State::count(state_->counters.get_multis);
  std::vector<std::optional<Item>> items;
  items.reserve(keys.size());
  for (auto key : keys) items.push_back(state_->get(key));
  return items;
}

void MemoryBackend::set_multi(std::span<const KeyedItem> items, Ttl ttl) {
  State::count(state_->counters.sets);
  for (const auto& each : items) state_->set(each.key, *each.item, ttl);
}

void MemoryBackend::remove_multi(std::span<const std::string_view> keys) {
  State::count(state_->counters.removes);
  for (auto key : keys) state_->remove(key);
}

std::unique_ptr<DistributedLock> MemoryBackend::make_lock(std::string_view key, Ttl ttl) {
  return std::make_unique<MemoryLock>(state_, detail::lock_key_for(key), ttl);
}

std::size_t MemoryBackend::size() const {
  const TimePoint now = state_->clock->now();
  std::size_t n = 0;
  for (const auto& shard : state_->shards) {
    std::lock_guard lock(shard.mutex);
    for (const auto& [key, entry] : shard.entries) n += State::expired(entry, now) ? 0 : 1;
  }
  return n;
}

std::size_t MemoryBackend::entries() const {
  std::size_t n = 0;
  for (const auto& shard : state_->shards) {
    std::lock_guard lock(shard.mutex);
    n += shard.entries.size();
  }
  return n;
}

MemoryBackend::Counters MemoryBackend::counters() const noexcept {
  const auto& c = state_->counters;
  auto load = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return Counters{load(c.gets),    load(c.get_multis),    load(c.sets),        load(c.adds),
                  load(c.removes), load(c.lock_releases), load(c.lock_extends)};
}

}  // namespace dogpile
