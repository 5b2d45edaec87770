// Envelopes kept in this process (internal): a bounded, sharded map from
// backend key to the item last seen or made for it, each with a time after
// which it is dropped. The engine keeps here what it makes while the backend
// fails, so that a dead server does not turn every call into a creation.
//
// Bounds: at most `max_entries` items and `max_bytes` of item bytes in all
// (each shard a sixteenth of both); past them a shard drops its least
// recently used items. Least recently used, because the items are a
// process's working set while its server is away: the hot keys stay, the
// ones nobody asked for since go first. Thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"

namespace dogpile::detail {

class LocalStore {
 public:
  /// No entries: keeps nothing.
  LocalStore(std::size_t max_entries, std::size_t max_bytes);

  /// Keeps `item` under `key` until `until` (replacing what was there).
  void put(std::string_view key, std::shared_ptr<const Item> item, SteadyTime until);
  /// The item under `key`, if it is there and `now` is before its time.
  [[nodiscard]] std::shared_ptr<const Item> get(std::string_view key, SteadyTime now);
  void erase(std::string_view key);
  void clear();

  [[nodiscard]] std::size_t entries() const;
  [[nodiscard]] std::size_t bytes() const;

  /// In a forked child: a parent's thread may have held a shard's mutex.
  void after_fork_in_child() noexcept;

 private:
  static constexpr std::size_t kShards = 16;
  using Order = std::list<std::string>;  // most recently used first
  struct Entry {
    std::shared_ptr<const Item> item;
    SteadyTime until;
    Order::iterator position;
    std::size_t size = 0;
  };
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, Entry> entries;
    Order order;
    std::size_t bytes = 0;
  };
  Shard& shard_of(std::string_view key);
  void drop(Shard& shard, std::unordered_map<std::string, Entry>::iterator it);

  const std::size_t max_entries_;  // per shard
  const std::size_t max_bytes_;    // per shard
  std::array<Shard, kShards> shards_;
};

}  // namespace dogpile::detail
