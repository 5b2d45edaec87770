// SPDX-License-Identifier: MIT
// dogpile/memory.hpp — an in-process Backend with time-to-live.
//
// `MemoryBackend` keeps items in this process's memory. It is the backend for
// demos, unit tests and single-process services that want dogpile's
// protection without a server. Expiry is judged by an injectable Clock, so
// tests step time instead of sleeping. Its locks are in-process too: two
// CacheRegions over one MemoryBackend behave like two processes sharing a
// memcached server.
//
//   dogpile::ManualClock clock;
//   auto backend = std::make_shared<dogpile::MemoryBackend>(
//       dogpile::MemoryBackend::Options{.clock = &clock});
//   backend->set("k", dogpile::Item{"v", 0}, std::chrono::seconds(10));
//   clock.advance(std::chrono::seconds(11));   // "k" is gone
//
// Expired items are dropped when touched and swept in passing as new items
// arrive, so memory follows the number of live items. Items have versions
// (gets/cas), locks carry their LockInfo, and server_time() is the backend's
// clock: it behaves like one memcached server, and counts its operations as
// the requests memcached would receive. Every member is thread-safe and never
// blocks for longer than a shard's mutex is held. After fork() the child has
// its own copy of the items.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"

namespace dogpile {

class MemoryBackend final : public Backend {
 public:
  struct Options {
    /// Judges item and lock expiry; nullptr means dogpile::system_clock().
    /// Must outlive the backend and its locks.
    const Clock* clock = nullptr;
  };

  /// Operation counts, for tests and diagnostics. A multi operation counts
  /// once, however many keys it carries.
  struct Counters {
    std::uint64_t gets = 0;
    std::uint64_t get_multis = 0;
    std::uint64_t sets = 0;
    std::uint64_t adds = 0;
    std::uint64_t cas = 0;
    std::uint64_t removes = 0;
    std::uint64_t lock_releases = 0;
    std::uint64_t lock_extends = 0;

    /// Every operation, of any kind.
    [[nodiscard]] std::uint64_t total() const noexcept {
      return gets + get_multis + sets + adds + cas + removes + lock_releases + lock_extends;
    }
    friend bool operator==(const Counters&, const Counters&) = default;
  };

  MemoryBackend();
  explicit MemoryBackend(Options options);
  ~MemoryBackend() override;
  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  void read(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request,
            const Visit* visit = nullptr) override;
  void write(std::span<KeyWrite> items, const Request& request) override;
  void erase(std::span<KeyErase> keys, const Request& request) override;
  [[nodiscard]] std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override;
  void claim(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override;
  void confirm(std::span<KeyRead> keys, const Request& request) override;
  void poll(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override;
  /// The backend's clock, exactly.
  [[nodiscard]] std::optional<ServerTime> server_time(std::string_view key,
                                                      const Request& request) override;

  /// Live (unexpired) items, locks included. Thread-safe; O(items).
  [[nodiscard]] std::size_t size() const;
  /// Items held in memory, expired ones not swept yet included. Thread-safe.
  [[nodiscard]] std::size_t entries() const;
  [[nodiscard]] Counters counters() const noexcept;

  struct State;  // shared with the locks this backend made

 private:
  std::shared_ptr<State> state_;
};

}  // namespace dogpile
