// SPDX-License-Identifier: MIT
// lock_item.hpp (internal) — what a distributed lock's item holds.
//
// The lock of a value key K is the item K#L. Its bytes name the holder and
// tell waiters when the value is due, so they can sleep until then instead of
// polling:
//
//   offset  size  field
//        0     4  magic "dgpL"
//        4     1  format version (1)
//        5     1  size in bytes (56)
//        6     2  reserved, zero
//        8     8  started_at: when the holder took the lock, microseconds since
//                 the Unix epoch on the fleet clock; 0 if unknown
//       16     8  expected: how long the last creation of K took, in
//                 microseconds; 0 if unknown
//       24     8  clock error: how far the holder's fleet clock may be off, in
//                 microseconds
//       32    16  token: 128 random bits, one per acquisition
//       48     8  key check of the lock key (detail::key_check)
//
// Flags kLockFlags. Anything else under a lock key is still a lock (someone
// holds it) but tells nothing.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

inline constexpr std::uint32_t kLockFlags = 0x64704C01;  // "dpL" + version 1
inline constexpr std::size_t kLockItemSize = 56;

struct LockItem {
  std::array<std::uint8_t, 16> token{};
  TimePoint started_at{};                 // epoch: unknown
  std::chrono::microseconds expected{0};  // 0: unknown
  std::chrono::microseconds clock_error{0};
  std::uint64_t key_check = 0;
};

/// The item's bytes (its flags are kLockFlags).
[[nodiscard]] std::string encode_lock_item(const LockItem& lock);

/// A new acquisition's lock item for the lock key `lock_key`: a fresh token
/// and the holder's start, history and clock error.
[[nodiscard]] LockItem new_lock_item(std::string_view lock_key, TimePoint started_at,
                                     std::chrono::microseconds expected,
                                     std::chrono::microseconds clock_error);

/// Decodes a lock item; nullopt if `bytes` and `flags` are not one, or its key
/// check is not `expected_key_check`. Pure; never throws.
[[nodiscard]] std::optional<LockItem> decode_lock_item(std::string_view bytes, std::uint32_t flags,
                                                       std::uint64_t expected_key_check) noexcept;

}  // namespace dogpile::detail
