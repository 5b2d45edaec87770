// SPDX-License-Identifier: MIT
#include "format/keys.hpp"

#include <bit>
#include <stdexcept>

#include "dogpile/backend.hpp"
#include "format/sha256.hpp"

namespace dogpile::detail {

bool is_plain_key_text(std::string_view s) noexcept {
  for (const char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x21 || b > 0x7e || b == '#') return false;
  }
  return true;
}

void validate_key_prefix(std::string_view prefix) {
  if (prefix.size() > kMaxKeyPrefix) {
    throw std::invalid_argument("dogpile: key_prefix is " + std::to_string(prefix.size()) +
                                " bytes; it must be at most " + std::to_string(kMaxKeyPrefix));
  }
  if (!is_plain_key_text(prefix)) {
    throw std::invalid_argument(
        "dogpile: key_prefix may hold only printable ASCII other than '#' (no spaces or "
        "control bytes)");
  }
}

bool is_backend_key(std::string_view key) noexcept {
  if (key.empty() || key.size() > kMemcachedMaxKey) return false;
  for (const char c : key) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x21 || b > 0x7e) return false;
  }
  return true;
}

void check_backend_key(std::string_view op, std::string_view key) {
  if (is_backend_key(key)) return;
  // The key as it can be read in a log: bytes outside printable ASCII escaped.
  static constexpr char kHex[] = "0123456789abcdef";
  std::string shown;
  for (const char c : key.substr(0, 64)) {
    const auto b = static_cast<unsigned char>(c);
    if (b > 0x20 && b < 0x7f && b != '\\') {
      shown += c;
    } else {
      shown.append("\\x").append(1, kHex[b >> 4]).append(1, kHex[b & 15]);
    }
  }
  if (key.size() > 64) shown += "...";
  throw BackendError(
      std::string("memcached ")
          .append(op)
          .append(" of key \"")
          .append(shown)
          .append("\": not a memcached key (1 to 250 bytes of printable ASCII: no spaces, "
                  "control bytes or bytes above 0x7e); a CacheRegion maps any key to one, "
                  "a Backend takes only mapped keys"),
      {}, "INVALID_KEY");
}

std::string map_key(std::string_view prefix, std::string_view key) {
  std::string out;
  const std::size_t plain = prefix.size() + key.size();
  if (plain > 0 && plain <= kMaxPlainKey && is_plain_key_text(key)) {
    out.reserve(prefix.size() + key.size());
    out.append(prefix).append(key);
  } else {
    out.reserve(prefix.size() + 65);
    out.append(prefix).append(1, '#').append(sha256_hex(key));
  }
  return out;
}

std::string lock_key_for(std::string_view value_key) {
  std::string out;
  out.reserve(value_key.size() + 2);
  out.append(value_key).append("#L");
  return out;
}

namespace {

constexpr std::uint64_t kMul1 = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kMul2 = 0xC2B2AE3D27D4EB4Full;
constexpr std::uint64_t kMul3 = 0x165667B19E3779F9ull;

std::uint64_t load_le(const char* p, std::size_t n) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// The finalizer of MurmurHash3: every input bit affects every output bit.
std::uint64_t avalanche(std::uint64_t h) noexcept {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

}  // namespace

std::uint64_t key_check(std::string_view key) noexcept {
  std::uint64_t h = kMul3 ^ (static_cast<std::uint64_t>(key.size()) * kMul1);
  std::size_t i = 0;
  for (; i + 8 <= key.size(); i += 8) {
    const std::uint64_t word = std::rotl(load_le(key.data() + i, 8) * kMul2, 31) * kMul1;
    h = std::rotl(h ^ word, 27) * kMul1 + kMul3;
  }
  if (i < key.size()) {
    const std::uint64_t word =
        std::rotl(load_le(key.data() + i, key.size() - i) * kMul2, 31) * kMul1;
    h = std::rotl(h ^ word, 27) * kMul1 + kMul3;
  }
  return avalanche(h);
}

}  // namespace dogpile::detail
