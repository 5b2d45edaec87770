// SPDX-License-Identifier: MIT
#include "format/lock_item.hpp"

#include <algorithm>
#include <cstring>

#include "format/keys.hpp"
#include "format/lock_token.hpp"

namespace dogpile::detail {
namespace {

constexpr char kMagic[4] = {'d', 'g', 'p', 'L'};

void put_le(char* at, std::uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) {
    at[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

std::uint64_t get_le(const char* at) noexcept {
  std::uint64_t v = 0;
  for (int i = 8; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(at[i]);
  return v;
}

// The largest microsecond count a TimePoint holds.
constexpr std::uint64_t kMaxMicros = static_cast<std::uint64_t>(
    std::chrono::duration_cast<std::chrono::microseconds>(Duration::max()).count());

}  // namespace

LockItem new_lock_item(std::string_view lock_key, TimePoint started_at,
                       std::chrono::microseconds expected, std::chrono::microseconds clock_error) {
  LockItem item;
  item.token = new_lock_token();
  item.started_at = started_at;
  item.expected = expected;
  item.clock_error = clock_error;
  item.key_check = key_check(lock_key);
  return item;
}

std::string encode_lock_item(const LockItem& lock) {
  std::string out(kLockItemSize, '\0');
  char* p = out.data();
  std::memcpy(p, kMagic, 4);
  p[4] = 1;
  p[5] = static_cast<char>(kLockItemSize);
  put_le(p + 8, static_cast<std::uint64_t>(
                    std::max<std::int64_t>(0, micros_since_epoch(lock.started_at))));
  put_le(p + 16, static_cast<std::uint64_t>(std::max<std::int64_t>(0, lock.expected.count())));
  put_le(p + 24, static_cast<std::uint64_t>(std::max<std::int64_t>(0, lock.clock_error.count())));
  std::memcpy(p + 32, lock.token.data(), lock.token.size());
  put_le(p + 48, lock.key_check);
  return out;
}

std::optional<LockItem> decode_lock_item(std::string_view bytes, std::uint32_t flags,
                                         std::uint64_t expected_key_check) noexcept {
  if (flags != kLockFlags || bytes.size() != kLockItemSize) return std::nullopt;
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0 || p[4] != 1 ||
      static_cast<unsigned char>(p[5]) != kLockItemSize || p[6] != 0 || p[7] != 0) {
    return std::nullopt;
  }
  const std::uint64_t started = get_le(p + 8);
  const std::uint64_t expected = get_le(p + 16);
  const std::uint64_t clock_error = get_le(p + 24);
  if (started > kMaxMicros || expected > kMaxMicros || clock_error > kMaxMicros) {
    return std::nullopt;
  }
  LockItem lock;
  lock.started_at = TimePoint(std::chrono::duration_cast<Duration>(
      std::chrono::microseconds(static_cast<std::int64_t>(started))));
  lock.expected = std::chrono::microseconds(static_cast<std::int64_t>(expected));
  lock.clock_error = std::chrono::microseconds(static_cast<std::int64_t>(clock_error));
  std::memcpy(lock.token.data(), p + 32, lock.token.size());
  lock.key_check = get_le(p + 48);
  if (lock.key_check != expected_key_check) return std::nullopt;
  return lock;
}

}  // namespace dogpile::detail
