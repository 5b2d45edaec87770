#include "dogpile/detail/keys.hpp"

#include <stdexcept>

#include "dogpile/detail/sha256.hpp"

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

}  // namespace dogpile::detail
