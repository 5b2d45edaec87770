// SPDX-License-Identifier: MIT
#include "dogpile/memory.hpp"

#include <array>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>

#include "base/fork.hpp"
#include "format/keys.hpp"
#include "format/lock_item.hpp"
#include "format/lock_token.hpp"

namespace dogpile {
// Named, not anonymous: MemoryBackend::State holds them (a unity build would
// see an internal type inside a class of external linkage).
namespace memory_detail {

struct Entry {
  Item item;
  std::optional<TimePoint> expires_at;  // nullopt: never
  Cas cas = 0;
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

}  // namespace memory_detail
using memory_detail::Entry;
using memory_detail::Shard;
using memory_detail::StringHash;

struct MemoryBackend::State : detail::ForkAware {
  explicit State(const Clock* c) : clock(c != nullptr ? c : &system_clock()), registration(*this) {}
  ~State() { registration.reset(); }

  const Clock* clock;
  std::array<Shard, 16> shards;
  std::atomic<Cas> last_cas{0};

  struct AtomicCounters {
    std::atomic<std::uint64_t> gets{0}, get_multis{0}, sets{0}, adds{0}, cas{0}, removes{0},
        lock_releases{0}, lock_extends{0};
  } counters;
  detail::ForkRegistration registration;

  // A forked child keeps its copy of the items (the two processes' backends
  // are separate from now on); only the mutexes need to be made usable.
  void after_fork_in_child() noexcept override {
    for (auto& shard : shards) new (&shard.mutex) std::mutex;
  }

  static void count(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
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

  // Stores an item with a new version; sweeps the shard's expired entries
  // once the inserts since the last sweep outnumber what that sweep kept, so
  // items that are never read again do not accumulate, at amortized O(1) per
  // insert. Shard mutex held.
  // Returns the new item's version.
  Cas put(Shard& shard, std::string_view key, const Item& item, Ttl ttl, TimePoint now) {
    const Cas version = last_cas.fetch_add(1, std::memory_order_relaxed) + 1;
    shard.entries.insert_or_assign(std::string(key), Entry{item, expiry(ttl, now), version});
    if (++shard.inserts_since_sweep > std::max<std::size_t>(64, shard.kept_by_last_sweep)) {
      std::erase_if(shard.entries, [&](const auto& kv) { return expired(kv.second, now); });
      shard.inserts_since_sweep = 0;
      shard.kept_by_last_sweep = shard.entries.size();
    }
    return version;
  }

  std::optional<Item> get(std::string_view key, Cas* version = nullptr) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    if (Entry* e = find_live(shard, key, now)) {
      if (version != nullptr) *version = e->cas;
      return e->item;
    }
    if (version != nullptr) *version = 0;
    return std::nullopt;
  }

  // Each returns the stored item's version, taken under the shard's lock
  // (0: not stored).
  Cas set(std::string_view key, const Item& item, Ttl ttl) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    return put(shard, key, item, ttl, now);
  }

  Cas add(std::string_view key, const Item& item, Ttl ttl) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    if (find_live(shard, key, now) != nullptr) return 0;
    return put(shard, key, item, ttl, now);
  }

  Cas cas(std::string_view key, const Item& item, Ttl ttl, Cas version) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    Entry* e = find_live(shard, key, now);
    if (e == nullptr || e->cas != version) return 0;
    return put(shard, key, item, ttl, now);
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

  // Applies `fn` to the live lock item under `key` if it holds `token`.
  template <class Fn>
  bool if_owned(std::string_view key, const detail::LockToken& token, Fn fn) {
    const TimePoint now = clock->now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    Entry* e = find_live(shard, key, now);
    if (e == nullptr) return false;
    const auto held = detail::decode_lock_item(e->item.data, e->item.flags, detail::key_check(key));
    if (!held || held->token != token) return false;
    fn(shard, *e, now);
    return true;
  }
};

namespace {

class MemoryLock final : public DistributedLock {
 public:
  MemoryLock(std::shared_ptr<MemoryBackend::State> state, std::string key, Ttl ttl,
             LockInfo info = {})
      : state_(std::move(state)), key_(std::move(key)), ttl_(ttl), info_(info) {}

  ~MemoryLock() override { release_if_held(); }

  bool extend(const Request&) override {
    if (!held_) return false;
    MemoryBackend::State::count(state_->counters.lock_extends);
    // Like memcached's touch: a new time to live, the same version.
    return state_->if_owned(key_, token_, [&](Shard&, Entry& e, TimePoint now) {
      e.expires_at = state_->expiry(ttl_, now);
    });
  }

  Ttl ttl() const noexcept override { return ttl_; }

 protected:
  bool try_acquire(const Request&) override {
    MemoryBackend::State::count(state_->counters.adds);
    const auto item =
        detail::new_lock_item(key_, info_.started_at, info_.expected, info_.clock_error);
    if (!state_->add(key_, Item{detail::encode_lock_item(item), detail::kLockFlags}, ttl_)) {
      return false;
    }
    token_ = item.token;
    held_ = true;
    return true;
  }

  bool release_acquired(const Request&) override {
    MemoryBackend::State::count(state_->counters.lock_releases);
    if (!held_) return false;
    held_ = false;
    return state_->if_owned(key_, token_, [&](Shard& shard, Entry&, TimePoint) {
      shard.entries.erase(shard.entries.find(std::string_view(key_)));
    });
  }

 private:
  std::shared_ptr<MemoryBackend::State> state_;
  std::string key_;
  Ttl ttl_;
  LockInfo info_;
  detail::LockToken token_{};
  bool held_ = false;
};

}  // namespace

MemoryBackend::MemoryBackend() : MemoryBackend(Options{}) {}
MemoryBackend::MemoryBackend(Options options) : state_(std::make_shared<State>(options.clock)) {}
MemoryBackend::~MemoryBackend() = default;

// Each operation counts as the requests memcached would receive: a read of
// one key a `gets`, of many (and confirm, poll) one multi-key `gets`;
// claim an `add` per key; a write an `add` or `cas` per fenced key and one
// `set` for the unfenced ones; an erase one delete; a lock's release one
// `cas` (DistributedLock::release).

void MemoryBackend::read(std::span<KeyRead> keys, const LeaseRequest&, const Request&,
                         const Visit* visit) {
  State::count(keys.size() == 1 ? state_->counters.gets : state_->counters.get_multis);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    KeyRead& key = keys[i];
    if (key.lease != nullptr) key.lease->state = LeaseState::unknown;
    auto item = state_->get(key.key, &key.cas);
    if (visit == nullptr) {
      key.item = std::move(item);
    } else if (item) {
      (*visit)(i, item->data, item->flags);
    }
  }
}

void MemoryBackend::write(std::span<KeyWrite> items, const Request&) {
  bool counted_sets = false;
  for (auto& w : items) {
    switch (w.fence.kind) {
      case Fence::Kind::absent:
        State::count(state_->counters.adds);
        w.cas = state_->add(w.key, *w.item, w.ttl);
        break;
      case Fence::Kind::version:
        State::count(state_->counters.cas);
        w.cas = state_->cas(w.key, *w.item, w.ttl, w.fence.version);
        break;
      case Fence::Kind::none:
        if (!std::exchange(counted_sets, true)) State::count(state_->counters.sets);
        w.cas = state_->set(w.key, *w.item, w.ttl);
        break;
    }
    w.stored = w.cas != 0;
  }
}

void MemoryBackend::erase(std::span<KeyErase> keys, const Request&) {
  State::count(state_->counters.removes);
  for (auto& key : keys) key.existed = state_->remove(key.key);
}

std::unique_ptr<DistributedLock> MemoryBackend::make_lock(std::string_view key, Ttl ttl) {
  return std::make_unique<MemoryLock>(state_, detail::lock_key_for(key), ttl);
}

void MemoryBackend::claim(std::span<KeyRead> keys, const LeaseRequest& lease,
                          const Request& request) {
  for (auto& key : keys) {
    key.lease->try_take(
        std::make_unique<MemoryLock>(state_, detail::lock_key_for(key.key), lease.ttl, lease.info),
        request);
  }
}

void MemoryBackend::confirm(std::span<KeyRead> keys, const Request&) {
  State::count(state_->counters.get_multis);
  for (auto& key : keys) {
    key.item = state_->get(key.key, &key.cas);
    key.lease->fence =
        key.item ? Fence{Fence::Kind::version, key.cas} : Fence{Fence::Kind::absent, 0};
  }
}

void MemoryBackend::poll(std::span<KeyRead> keys, const LeaseRequest&, const Request&) {
  State::count(state_->counters.get_multis);
  for (auto& key : keys) {
    key.item = state_->get(key.key, &key.cas);
    Lease& lease = *key.lease;
    lease.read_with = false;
    const std::string lock_key = detail::lock_key_for(key.key);
    const auto lock = state_->get(lock_key);
    if (!lock) {
      lease.state = LeaseState::free;
      continue;
    }
    lease.state = LeaseState::held;
    lease.holder = {};
    if (auto info =
            detail::decode_lock_item(lock->data, lock->flags, detail::key_check(lock_key))) {
      lease.holder = LockInfo{info->started_at, info->expected, info->clock_error};
    }
  }
}

std::optional<ServerTime> MemoryBackend::server_time(std::string_view, const Request&) {
  return ServerTime{state_->clock->now(), Duration::zero()};
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
  return Counters{load(c.gets), load(c.get_multis), load(c.sets),          load(c.adds),
                  load(c.cas),  load(c.removes),    load(c.lock_releases), load(c.lock_extends)};
}

}  // namespace dogpile
