// SPDX-License-Identifier: MIT
#include "transport/meta/meta_protocol.hpp"
#include "base/parse_number.hpp"

#include <charconv>
#include <limits>

#include "transport/reply_line.hpp"

namespace dogpile::detail::meta {

using wire::append_number;
using wire::token;

namespace {

// Fills the return flags of `out` from the tokens after the code.
bool parse_flags(std::string_view line, std::size_t at, Reply& out) noexcept {
  for (std::string_view t = token(line, at); !t.empty(); t = token(line, at)) {
    const std::string_view value = t.substr(1);
    switch (t[0]) {
      case 'c': {
        std::uint64_t v = 0;
        if (!parse_number(value, v)) return false;
        out.cas = v;
        break;
      }
      case 'f': {
        std::uint32_t v = 0;
        if (!parse_number(value, v)) return false;
        out.flags = v;
        break;
      }
      case 't': {
        std::int64_t v = 0;
        if (!parse_number(value, v) || v < -1 || v > (std::int64_t{1} << 31)) return false;
        out.ttl = v;
        break;
      }
      case 'k':
        out.key = value;
        break;
      case 'O':
        out.opaque = value;
        break;
      case 'W':
        out.won = true;
        break;
      case 'Z':
        out.held = true;
        break;
      case 'X':
        out.stale = true;
        break;
      default:  // s, h, l, b and flags of later versions: not used here
        break;
    }
  }
  return true;
}

}  // namespace

Parse parse_reply(std::string_view buffer, Reply& out, std::size_t& consumed,
                  std::size_t max_value) noexcept {
  out = Reply{};
  std::string_view line;
  if (const auto early = wire::incomplete<Parse>(buffer, line)) return *early;
  std::size_t at = 0;
  const std::string_view code = token(line, at);
  std::size_t total = line.size() + 2;
  if (code == "VA") {
    std::size_t length = 0;
    if (!parse_number(token(line, at), length) || length > max_value) return Parse::malformed;
    if (!parse_flags(line, at, out)) return Parse::malformed;
    if (buffer.size() - total < length + 2) return Parse::more;
    if (buffer.substr(total + length, 2) != "\r\n") return Parse::malformed;
    out.code = Code::va;
    out.data = buffer.substr(total, length);
    total += length + 2;
  } else if (code == "HD" || code == "EN" || code == "NF" || code == "NS" || code == "EX" ||
             code == "MN") {
    if (!parse_flags(line, at, out)) return Parse::malformed;
    out.code = code == "HD"   ? Code::hd
               : code == "EN" ? Code::en
               : code == "NF" ? Code::nf
               : code == "NS" ? Code::ns
               : code == "EX" ? Code::ex
                              : Code::mn;
  } else if (code == "ERROR") {
    out.code = Code::error;
  } else if (code == "CLIENT_ERROR" || code == "SERVER_ERROR") {
    out.code = code == "CLIENT_ERROR" ? Code::client_error : Code::server_error;
    while (at < line.size() && line[at] == ' ') ++at;
    out.message = line.substr(at);
  } else {
    return Parse::malformed;
  }
  consumed = total;
  return Parse::ok;
}

namespace {

void append_head(std::string& out, std::string_view command, std::string_view key) {
  out.append(command).append(" ").append(key);
}

void append_tail(std::string& out, std::string_view flags, std::uint32_t opaque) {
  if (!flags.empty()) out.append(" ").append(flags);
  out.append(" O");
  append_number(out, opaque);
  out.append("\r\n");
}

}  // namespace

void append_mg(std::string& out, std::string_view key, std::string_view flags,
               std::uint32_t opaque) {
  append_head(out, "mg", key);
  append_tail(out, flags, opaque);
}

void append_md(std::string& out, std::string_view key, std::string_view flags,
               std::uint32_t opaque) {
  append_head(out, "md", key);
  append_tail(out, flags, opaque);
}

void append_ms(std::string& out, std::string_view key, std::string_view data,
               std::string_view flags, std::uint32_t opaque) {
  append_head(out, "ms", key);
  out.append(" ");
  append_number(out, data.size());
  append_tail(out, flags, opaque);
  out.append(data).append("\r\n");
}

void append_mn(std::string& out) { out.append("mn\r\n"); }

}  // namespace dogpile::detail::meta
