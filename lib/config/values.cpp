// SPDX-License-Identifier: MIT
#include "config/values.hpp"

#include <cctype>
#include <cstdint>
#include <limits>

#include "base/parse_number.hpp"

namespace dogpile::detail {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Lower case, `.` and `-` as `_`: local.ttl, LOCAL_TTL and local-ttl are one.
std::string normal_key(std::string_view key) {
  std::string out;
  for (const char c : trim(key)) {
    out += (c == '.' || c == '-') ? '_'
                                  : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "500ms", "5s", "5m", "2h", "1d"; also fractions ("1.5s").
std::optional<Duration> parse_duration(std::string_view text) {
  text = trim(text);
  std::size_t digits = 0;
  while (digits < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.')) {
    ++digits;
  }
  double amount = 0;
  if (digits == 0 || !parse_number(text.substr(0, digits), amount)) return std::nullopt;
  const std::string unit = lower(trim(text.substr(digits)));
  double seconds = 0;
  if (unit == "ms") {
    seconds = amount / 1000;
  } else if (unit == "us") {
    seconds = amount / 1e6;
  } else if (unit == "s") {
    seconds = amount;
  } else if (unit == "m" || unit == "min") {
    seconds = amount * 60;
  } else if (unit == "h") {
    seconds = amount * 3600;
  } else if (unit == "d") {
    seconds = amount * 86400;
  } else {
    return std::nullopt;
  }
  if (!(seconds >= 0) || seconds > 1e9) return std::nullopt;  // beyond 30 years: a typo
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(seconds));
}

// "32MiB", "64KB", "1048576", "2 GiB".
std::optional<std::size_t> parse_size(std::string_view text) {
  text = trim(text);
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  std::uint64_t amount = 0;
  if (digits == 0 || !parse_number(text.substr(0, digits), amount)) return std::nullopt;
  const std::string unit = lower(trim(text.substr(digits)));
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "b") {
    scale = 1;
  } else if (unit == "kb") {
    scale = 1000;
  } else if (unit == "mb") {
    scale = 1000 * 1000;
  } else if (unit == "gb") {
    scale = 1000 * 1000 * 1000;
  } else if (unit == "kib") {
    scale = 1024;
  } else if (unit == "mib") {
    scale = 1024 * 1024;
  } else if (unit == "gib") {
    scale = 1024 * 1024 * 1024;
  } else {
    return std::nullopt;
  }
  if (amount > std::numeric_limits<std::size_t>::max() / scale) return std::nullopt;
  return static_cast<std::size_t>(amount * scale);
}

std::optional<bool> parse_switch(std::string_view text) {
  const std::string v = lower(trim(text));
  if (v == "true" || v == "on" || v == "yes" || v == "1") return true;
  if (v == "false" || v == "off" || v == "no" || v == "0") return false;
  return std::nullopt;
}

bool is_off(std::string_view text) {
  const std::string v = lower(trim(text));
  return v == "off" || v == "none" || v == "never" || v == "false";
}

}  // namespace dogpile::detail
