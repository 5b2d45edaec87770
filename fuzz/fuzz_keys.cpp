// SPDX-License-Identifier: MIT
// libFuzzer target: key mapping. For any prefix the region would accept and
// any key: the memcached key is valid (1-250 bytes, no space or control
// byte, nothing above 0x7e; the transports' is_backend_key agrees), its lock
// key too, plain keys are kept as they are, and a key that
// differs in one byte maps to a different memcached key.
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "format/keys.hpp"

using namespace dogpile::detail;

namespace {
// Valid by a rule of its own, and by the one the transports check.
bool valid(std::string_view k) {
  if (k.empty() || k.size() > kMemcachedMaxKey) return false;
  for (char c : k) {
    const auto b = static_cast<unsigned char>(c);
    if (b <= 0x20 || b >= 0x7f) return false;
  }
  return is_backend_key(k);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte splits the input into a prefix and a key.
  const std::size_t prefix_len = std::min<std::size_t>(data[0], size - 1);
  const std::string_view prefix(reinterpret_cast<const char*>(data + 1), prefix_len);
  const std::string_view key(reinterpret_cast<const char*>(data + 1 + prefix_len),
                             size - 1 - prefix_len);
  try {
    validate_key_prefix(prefix);
  } catch (const std::invalid_argument&) {
    return 0;  // the region refuses it at construction
  }
  const std::string mapped = map_key(prefix, key);
  if (!valid(mapped) || !valid(lock_key_for(mapped))) std::abort();
  if (mapped != map_key(prefix, key)) std::abort();  // deterministic
  const bool plain = !key.empty() || !prefix.empty();
  if (plain && prefix.size() + key.size() <= kMaxPlainKey && is_plain_key_text(key) &&
      mapped != std::string(prefix) + std::string(key)) {
    std::abort();
  }
  // Flip one byte of the key: a different key, so a different memcached key.
  if (!key.empty()) {
    std::string other(key);
    other[other.size() / 2] = static_cast<char>(other[other.size() / 2] ^ 0x01);
    if (map_key(prefix, other) == mapped) std::abort();
  }
  if (map_key(prefix, std::string(key) + "x") == mapped) std::abort();
  return 0;
}
