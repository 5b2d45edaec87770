// SPDX-License-Identifier: MIT
// Envelopes kept in this process (internal): a bounded, sharded map from
// backend key to an item, each with a time after which it is dropped. The
// engine has two: the values it makes while the backend fails (degraded
// mode), and the local tier (RegionOptions::local) in front of the backend.
//
// Bounds: at most `max_entries` items and `max_bytes` in all (each shard a
// sixteenth of both), where an item costs its key, its bytes and the
// bookkeeping around them (cost()); past them a shard drops its least
// recently used items. Least recently used, because what is kept is a
// process's working set: the hot keys stay, the ones nobody asked for since
// go first. A lookup takes its shard's lock shared, so lookups do not wait
// on each other (nor on a thread preempted inside one); a hit on an item
// that is not its shard's newest relinks it after, under the lock held
// alone. Counts in the sketch below are relaxed atomics.
//
// With frequency admission (the local tier's default: LocalTier::admission),
// a fill that would evict the least recently used item is admitted only if
// its key was asked for more often than the victim's (TinyLFU): each shard
// counts lookups in a count-min sketch (four rows of 4-bit counters, a key's
// four in one cache line; rows four times as wide as the items it may hold),
// halved every twenty lookups per item it may hold, so counts
// follow what is asked for now. A scan of keys asked for once then evicts
// nothing, and a hot key's first fill is not lost to a stream of cold ones.
// Writes of this process are kept whatever the counts.
//
// A thread's own front: each thread keeps, in a small table of its own
// (128 sets of two slots, items of up to kFrontBytes), the items it last found here,
// with the shard's epoch at the time. Every removal or replacement of an
// item (a write, an eviction, a discard, clear) advances its shard's epoch;
// a lookup that finds its key in the thread's table, before its time and in
// an unchanged epoch, takes it from there: no lock, no shared count, no
// write to memory another core reads (borrow()). Every kFrontPass-th such
// hit goes through the shard as before, counting the hits since in the
// sketch and relinking the item unless it is among the newest quarter of
// its shard's links, so recency and frequency still see the key (a key
// served from fronts is hot: the order within that quarter is all it
// gives up). What a front holds beyond the bounds above is at most 256 items
// of up to 1 KB a thread.
//
// Fills race with writes: a reader that read the backend before this
// process's set or remove landed must not put the older item here after the
// write's own erase. Each shard counts its writes (put_written, erase); a
// fill names the count it saw before its read and is dropped if a write came
// between. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"

namespace dogpile::detail {

class LocalStore {
 public:
  /// No entries: keeps nothing. `admission`: fills are admitted by
  /// frequency (above); else every fill is kept (least recently used).
  LocalStore(std::size_t max_entries, std::size_t max_bytes, bool admission = false);
  ~LocalStore();
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  /// What keeping `item` under `key` costs against max_bytes.
  [[nodiscard]] static std::size_t cost(std::string_view key, const Item& item) noexcept;

  /// This process wrote `item` under `key`: kept until `until`, replacing
  /// what was there; fills that read before it are dropped.
  void put_written(std::string_view key, std::shared_ptr<const Item> item, SteadyTime until);
  /// If `key` is held: replaced by `item` (kept until `until`), or dropped
  /// if `item` is null. A key not held stays so.
  void update(std::string_view key, std::shared_ptr<const Item> item, SteadyTime until);
  /// Nothing held: one relaxed load, for the paths that ask on every call.
  [[nodiscard]] bool empty() const noexcept { return held_.load(std::memory_order_relaxed) == 0; }
  /// The writes to `key`'s shard so far; a fill passes it to put_read.
  [[nodiscard]] std::uint64_t writes(std::string_view key) const noexcept;
  /// Keeps `item`, read from the backend (or made) after writes(key) said
  /// `seen`, from `now` until `until` — unless a write to the shard came
  /// since, or the key already holds an item (a fill that was slower than
  /// another does not replace what that one put).
  /// `version`: the item's version as read (its CAS; 0: unknown). An item
  /// with a version stays after its time, for revalidation (expired()).
  /// `extra`: bytes the item holds beyond cost(), counted against max_bytes.
  void put_read(std::string_view key, std::shared_ptr<const Item> item, SteadyTime now,
                SteadyTime until, std::uint64_t seen, Cas version = 0, std::size_t extra = 0);
  /// Drops `key`'s item if it is still `item` (found no longer fresh), so
  /// that the next fill may put a newer one.
  void discard(std::string_view key, const Item* item);
  /// The item under `key`, if it is there and `now` is before its time.
  /// `writes`, if given, receives writes(key) as it was at the lookup.
  [[nodiscard]] std::shared_ptr<const Item> get(std::string_view key, SteadyTime now,
                                                std::uint64_t* writes = nullptr);
  /// As get(), through this thread's front (above). The item is borrowed:
  /// valid until this thread's BorrowScope ends (all it borrowed within
  /// stay valid, however often code run inside borrows again); outside a
  /// scope, until this thread's next borrow() from any store.
  class BorrowScope {
   public:
    BorrowScope() noexcept;
    ~BorrowScope();
    BorrowScope(const BorrowScope&) = delete;
    BorrowScope& operator=(const BorrowScope&) = delete;
  };
  [[nodiscard]] const Item* borrow(std::string_view key, SteadyTime now,
                                   std::uint64_t* writes = nullptr);
  /// An item whose time has passed, kept with the version it was read at.
  struct Expired {
    std::shared_ptr<const Item> item;
    Cas version = 0;
  };
  /// The item under `key` if its time has passed and it has a version (an
  /// empty Expired otherwise): the backend may say it has not changed.
  [[nodiscard]] Expired expired(std::string_view key, SteadyTime now);
  /// If `key` still holds `item`: kept until `until` (true).
  bool renew(std::string_view key, const Item* item, SteadyTime until);
  /// Drops `key`'s item; fills that read before are dropped too.
  void erase(std::string_view key);
  void clear();

  [[nodiscard]] bool enabled() const noexcept { return max_entries_ != 0; }
  /// How often `key` was looked up lately, as frequency admission counts
  /// (0 to 15; 0 without admission).
  [[nodiscard]] unsigned frequency(std::string_view key) const;
  [[nodiscard]] std::size_t entries() const;
  [[nodiscard]] std::size_t bytes() const;

  /// In a forked child: a parent's thread may have held a shard's mutex.
  void after_fork_in_child() noexcept;

 private:
  static constexpr std::size_t kShards = 16;
  static constexpr std::size_t kFrontBytes = 1024;
  static constexpr std::uint32_t kFrontPass = 64;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const noexcept {
      return std::hash<std::string_view>{}(key);
    }
  };
  struct Entry;
  using Node = std::pair<const std::string, Entry>;
  struct Entry {
    std::shared_ptr<const Item> item;
    SteadyTime until;
    Cas version = 0;  // as read; 0: none (dropped once its time has passed)
    std::size_t size = 0;
    std::uint64_t linked = 0;  // the shard's links when it was last linked newest
    Node* newer = nullptr;     // the recency list, most recent at the shard's head
    Node* older = nullptr;
  };
  using Map = std::unordered_map<std::string, Entry, Hash, std::equal_to<>>;
  // A count-min sketch of lookups: four rows of 4-bit counters (a byte
  // each, for speed), a key's four in one cache-line block. Lookups count
  // under the shard's shared lock: each counter is a relaxed atomic (two
  // lookups at once may count one), halving takes the lock alone.
  struct Sketch {
    static constexpr std::size_t kRows = 4;
    static constexpr std::size_t kBlock = 64;  // counters a block: 16 a row
    std::vector<std::uint8_t> counts;          // blocks x kBlock; atomic_ref only
    std::size_t mask = 0;                      // blocks - 1 (a power of two)
    std::atomic<std::size_t> samples{0};
    std::size_t period = 0;  // samples between halvings
    void size_for(std::size_t entries);
    /// Counts `lookups` of a key; true when the counts are due to be halved.
    bool add(std::size_t hash, std::uint32_t lookups = 1) noexcept;
    void halve() noexcept;  // with the shard's lock held alone
    [[nodiscard]] unsigned estimate(std::size_t hash) const noexcept;
  };
  struct Shard {
    mutable std::shared_mutex mutex;
    Map entries;
    Node* newest = nullptr;
    Node* oldest = nullptr;
    std::size_t bytes = 0;
    std::uint64_t links = 0;  // link_newest calls so far
    // Read by every front hit: a line of their own, written only by writes
    // and removals.
    alignas(64) std::atomic<std::uint64_t> writes{0};
    std::atomic<std::uint64_t> epoch{0};  // removals and replacements so far
    alignas(64) Sketch sketch;            // empty without admission
  };
  // A lookup under the shard's shared lock, counting `lookups` in the
  // sketch; `epoch` and `until`, if given, receive the shard's epoch and
  // the item's time.
  std::shared_ptr<const Item> lookup(Shard& shard, std::size_t hash, std::string_view key,
                                     SteadyTime now, std::uint64_t* writes, std::uint32_t lookups,
                                     std::uint64_t* epoch, SteadyTime* until);
  Shard& shard_of(std::string_view key) noexcept;
  const Shard& shard_of(std::string_view key) const noexcept;
  // Keeps `item`; false if admission refused it (`admit`: ask first).
  bool insert(Shard& shard, std::string_view key, std::shared_ptr<const Item> item,
              SteadyTime until, Cas version = 0, bool admit = false, std::size_t extra = 0);
  static void unlink(Shard& shard, Node& node) noexcept;
  static void link_newest(Shard& shard, Node& node) noexcept;
  // A hit on `key`, shared lock released: the item's relink, or an expired
  // item's drop, or the sketch's halving, under the lock alone.
  void after_hit(Shard& shard, std::string_view key, const Item* item, SteadyTime now, bool relink,
                 bool halve);
  void drop(Shard& shard, Map::iterator it);

  const std::uint64_t id_;            // names this store in the threads' fronts
  std::atomic<std::size_t> held_{0};  // entries in all shards
  const std::size_t max_entries_;     // per shard
  const std::size_t max_bytes_;       // per shard
  const bool admission_;
  std::array<Shard, kShards> shards_;
};

}  // namespace dogpile::detail
