// SPDX-License-Identifier: MIT
// The invalidation record's contents (internal): two timestamps, bound to
// the record's key. Pure; see invalidation.hpp for how a region uses them.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

#include "dogpile/backend.hpp"

namespace dogpile::detail {

struct InvalidationTimes {
  std::int64_t hard = kNever;
  std::int64_t soft = kNever;
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();
  static constexpr std::uint32_t kFlags = 0x64704902;  // "dpI" + version 2

  [[nodiscard]] Item encode(std::uint64_t key_check) const;
  /// nullopt if `item` is not a record, or not the one for `key_check`.
  [[nodiscard]] static std::optional<InvalidationTimes> decode(const Item& item,
                                                               std::uint64_t key_check) noexcept;
  [[nodiscard]] bool covers(const InvalidationTimes& other) const noexcept {
    return hard >= other.hard && soft >= other.soft;
  }
};

}  // namespace dogpile::detail
