// SPDX-License-Identifier: MIT
// Decimal numbers in protocol text and options (internal).
#pragma once

#include <charconv>
#include <string_view>

namespace dogpile::detail {

/// Parses all of `text` as a decimal number of type T: false if it is empty,
/// holds anything else, or does not fit (no sign for unsigned types).
template <class T>
[[nodiscard]] bool parse_number(std::string_view text, T& out) noexcept {
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace dogpile::detail
