// SPDX-License-Identifier: MIT
// A counter that many threads add to (internal): one slot per cache line,
// each thread adding to its own (threads are spread over the slots as they
// first add), summed when read. Adding is one uncontended atomic add where a
// shared counter would bounce its cache line between every core that adds.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace dogpile::detail {

class ShardedCounter {
 public:
  static constexpr std::size_t kSlots = 16;

  void add(std::uint64_t n = 1) noexcept {
    slots_[slot()].value.fetch_add(n, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t load() const noexcept {
    std::uint64_t sum = 0;
    for (const auto& s : slots_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

  /// This thread's slot.
  static std::size_t slot() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed) % kSlots;
    return mine;
  }

 private:
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> value{0};
  };
  std::array<Slot, kSlots> slots_{};
};

}  // namespace dogpile::detail
