// SPDX-License-Identifier: MIT
#include "format/lock_token.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <random>

namespace dogpile::detail {

LockToken new_lock_token() {
  LockToken token{};
  std::size_t filled = 0;
  while (filled < token.size()) {
    const ssize_t n = ::getrandom(token.data() + filled, token.size() - filled, 0);
    if (n > 0) {
      filled += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      break;  // no getrandom (very old kernel): fall back below
    }
  }
  if (filled < token.size()) {
    std::random_device device;  // reads the kernel's pool on Linux as well
    for (auto& byte : token) byte = static_cast<std::uint8_t>(device());
  }
  return token;
}

std::string to_hex(const LockToken& token) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(token.size() * 2);
  for (const auto byte : token) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xf];
  }
  return out;
}

}  // namespace dogpile::detail
