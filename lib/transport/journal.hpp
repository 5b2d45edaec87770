// SPDX-License-Identifier: MIT
// What a server missed while it was away (internal): the keys written while
// it could not be reached (a write that failed without an answer, or went to
// the gutter instead), deleted there before anything else is asked of it.
//
// A key is kept once however often it is written (the newest write is the
// one that counts, and every one of them is replayed the same way: as a
// delete), up to a bound per server; a key that does not fit is dropped and
// counted. A delete is the one replay that is right whatever happened since:
// the value the lost write carried may be stale by the time the server
// answers, and another process may have written a newer one there; a delete
// loses neither correctness nor more than one creation.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "transport/wire_client.hpp"

namespace dogpile::detail::wire {

class Journal {
 public:
  explicit Journal(std::size_t capacity) noexcept : capacity_(capacity) {}

  enum class Kept : std::uint8_t { added, already, full };
  /// Keeps `key`: added, already there, or not kept (the journal is full).
  Kept keep(std::string_view key);
  /// How many keys wait for their replay, or are being replayed.
  [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  /// Takes every key out, for a replay: they count as waiting until it ends
  /// (replayed(), or put_back()).
  [[nodiscard]] std::vector<std::string> take();
  /// The keys taken were deleted on the server.
  void replayed();
  /// Puts back the keys a replay could not deliver, as many as fit (a key
  /// kept meanwhile counts once); returns how many did not.
  std::size_t put_back(std::vector<std::string> keys);

  /// In a forked child: the parent's mutex may have been held.
  void after_fork_in_child() noexcept { new (&mutex_) std::mutex; }

 private:
  const std::size_t capacity_;
  std::mutex mutex_;
  std::unordered_set<std::string> keys_;
  std::size_t taken_ = 0;             // being replayed
  std::atomic<std::size_t> size_{0};  // keys_ and taken_
};

/// Deletes `keys` on one server, quietly (`md k q`, answered only NF for a
/// key not there; or `delete k noreply`), in chunks, each ended by a request
/// that is always answered (`mn`, or `version`): its answer says every
/// delete before it was done.
class ReplayPipeline final : public Pipeline {
 public:
  ReplayPipeline(const std::vector<std::string>& keys, bool meta) noexcept
      : keys_(keys), meta_(meta) {}
  std::size_t produce(std::string& out, Connection&) override;
  std::size_t consume(std::string_view unread, std::size_t, std::size_t& finished) override;
  void restart() noexcept override { next_ = 0; }

  /// Deletes per chunk.
  static constexpr std::size_t kChunk = 100;

 private:
  const std::vector<std::string>& keys_;
  bool meta_;
  std::size_t next_ = 0;  // the first key not written yet
};

}  // namespace dogpile::detail::wire
