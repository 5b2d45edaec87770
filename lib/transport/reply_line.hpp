// SPDX-License-Identifier: MIT
// The text both memcached dialects share (internal): a reply's first line,
// its space-separated tokens, numbers written into a request.
#pragma once

#include <charconv>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace dogpile::detail::wire {

/// A reply's header line (status, key, flags) is never longer than this.
inline constexpr std::size_t kMaxLine = 4096;

enum class Line { complete, more, malformed };

/// The first line of `buffer`, without its CR LF: complete; more (not all
/// here yet); or malformed, a line that runs on past kMaxLine without end.
[[nodiscard]] inline Line first_line(std::string_view buffer, std::string_view& line) noexcept {
  const auto end = buffer.find("\r\n");
  if (end == std::string_view::npos) return buffer.size() > kMaxLine ? Line::malformed : Line::more;
  line = buffer.substr(0, end);
  return Line::complete;
}

/// For a parser whose result `Parse` has `more` and `malformed`: nullopt
/// when the first line of `buffer` is complete (it is in `line`), else what
/// the parser returns for it.
template <class Parse>
[[nodiscard]] std::optional<Parse> incomplete(std::string_view buffer,
                                              std::string_view& line) noexcept {
  switch (first_line(buffer, line)) {
    case Line::complete:
      return std::nullopt;
    case Line::more:
      return Parse::more;
    case Line::malformed:
      break;
  }
  return Parse::malformed;
}

/// The next space-separated token of `line` from `at`; empty at the end.
[[nodiscard]] inline std::string_view token(std::string_view line, std::size_t& at) noexcept {
  while (at < line.size() && line[at] == ' ') ++at;
  const std::size_t start = at;
  while (at < line.size() && line[at] != ' ') ++at;
  return line.substr(start, at - start);
}

/// Appends the decimal digits of `n`.
template <class T>
void append_number(std::string& out, T n) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out.append(digits, end);
}

}  // namespace dogpile::detail::wire
