// SPDX-License-Identifier: MIT
// keys.hpp (internal) — user keys to memcached keys, safely.
//
// A user key is any bytes. The stored key is `prefix + key` when that is
// 1 to kMaxPlainKey bytes of printable ASCII (0x21-0x7e) other than '#';
// otherwise it is `prefix + "#" + sha256_hex(key)`. A region's lock key for a
// value key is `value_key + "#L"`.
//
// Why this cannot collide: the prefix never contains '#'. After it, a plain
// key has no '#', a hashed key is '#' and exactly 64 hex digits, and a lock
// key ends in "#L" after one of those. Distinct user keys therefore map to
// distinct value keys (barring a SHA-256 collision), and no value key equals
// a lock key. No mapped key holds a space or a control byte, so none can end
// a protocol line or inject a command, and every one is at most 250 bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dogpile::detail {

/// memcached's limit on key length.
inline constexpr std::size_t kMemcachedMaxKey = 250;
/// Longest plain (unhashed) value key, prefix included: room is left for the
/// lock suffix and other suffixes derived from a value key.
inline constexpr std::size_t kMaxPlainKey = 240;
/// Longest key prefix a region accepts.
inline constexpr std::size_t kMaxKeyPrefix = 100;

/// True if every byte of `s` may appear in a plain key: printable ASCII other than '#'.
[[nodiscard]] bool is_plain_key_text(std::string_view s) noexcept;

/// Throws std::invalid_argument (saying what to fix) unless `prefix` is at
/// most kMaxKeyPrefix bytes of printable ASCII other than '#'.
void validate_key_prefix(std::string_view prefix);

/// The one rule both memcached transports check at every entry point before
/// a key reaches the wire: 1 to kMemcachedMaxKey bytes of printable ASCII
/// (0x21-0x7e). Every key map_key() makes, and its lock key, passes it.
[[nodiscard]] bool is_backend_key(std::string_view key) noexcept;

/// Throws BackendError (code INVALID_KEY, naming `op` and the key) unless
/// is_backend_key(key). Nothing is sent for such a key.
void check_backend_key(std::string_view op, std::string_view key);

/// The stored key for `key` under a validated `prefix`. Pure; thread-safe.
[[nodiscard]] std::string map_key(std::string_view prefix, std::string_view key);

/// The lock key that guards the value stored under `value_key`.
[[nodiscard]] std::string lock_key_for(std::string_view value_key);

/// A 64-bit check of a stored key, written into every item dogpile stores
/// under it (envelopes, lock items, the invalidation record), so that an item
/// read for one key but stored under another is recognised and refused. Not
/// cryptographic: it catches misrouted replies and shared connections, not a
/// writer who forges items. Stable across hosts and byte orders. Pure.
[[nodiscard]] std::uint64_t key_check(std::string_view stored_key) noexcept;

}  // namespace dogpile::detail
