// SPDX-License-Identifier: MIT
// Which keys' locks this process knows to be held by another (internal).
//
// A stale caller that finds a key's lock taken serves the stale value; it
// remembers that for a while (until the holder's creation is likely done),
// so that the process's next stale callers of that key serve it too without
// asking for the lock again: a stale hit costs the read alone. Bounded: at
// most kCapacity keys per shard; a full shard drops the half that ends first.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

class HeldElsewhere {
 public:
  static constexpr std::size_t kShards = 16;
  static constexpr std::size_t kCapacity = 1024;  // keys per shard

  /// Whether `key`'s lock is known to be held elsewhere at `now`.
  [[nodiscard]] bool held(std::string_view key, SteadyTime now);
  /// Remembers that `key`'s lock is held elsewhere until `until`.
  void remember(std::string_view key, SteadyTime until);
  /// Forgets `key` (this process created it, or took its lock).
  void forget(std::string_view key);

  [[nodiscard]] std::size_t size() const;
  /// In a forked child: the shards' mutexes may have been held.
  void reset_after_fork() noexcept;

 private:
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, SteadyTime> until;
  };
  Shard& shard_for(std::string_view key) noexcept;
  std::array<Shard, kShards> shards_;
};

}  // namespace dogpile::detail
