// SPDX-License-Identifier: MIT
#include "transport/classic/text_protocol.hpp"
#include "base/parse_number.hpp"

#include <charconv>

#include "format/keys.hpp"
#include "transport/reply_line.hpp"

namespace dogpile::detail::text {
namespace {

using wire::append_number;
using wire::token;

}  // namespace

Parse parse_reply(std::string_view buffer, Reply& out, std::size_t& consumed,
                  std::size_t max_value) noexcept {
  out = Reply{};
  std::string_view line;
  if (const auto early = wire::incomplete<Parse>(buffer, line)) return *early;
  std::size_t at = 0;
  const std::string_view word = token(line, at);
  std::size_t total = line.size() + 2;
  if (word == "VALUE") {
    out.kind = Kind::value;
    out.key = token(line, at);
    std::size_t length = 0;
    if (!is_backend_key(out.key) || !parse_number(token(line, at), out.flags) ||
        !parse_number(token(line, at), length) || length > max_value) {
      return Parse::malformed;
    }
    if (const std::string_view cas = token(line, at); !cas.empty()) {
      if (!parse_number(cas, out.cas) || !token(line, at).empty()) return Parse::malformed;
    }
    if (buffer.size() - total < length + 2) return Parse::more;
    if (buffer.substr(total + length, 2) != "\r\n") return Parse::malformed;
    out.data = buffer.substr(total, length);
    total += length + 2;
  } else if (word == "CLIENT_ERROR" || word == "SERVER_ERROR") {
    out.kind = word == "CLIENT_ERROR" ? Kind::client_error : Kind::server_error;
    while (at < line.size() && line[at] == ' ') ++at;
    out.message = line.substr(at);
  } else {
    if (at != line.size()) return Parse::malformed;  // these words stand alone
    if (word == "END") {
      out.kind = Kind::end;
    } else if (word == "STORED") {
      out.kind = Kind::stored;
    } else if (word == "NOT_STORED") {
      out.kind = Kind::not_stored;
    } else if (word == "EXISTS") {
      out.kind = Kind::exists;
    } else if (word == "NOT_FOUND") {
      out.kind = Kind::not_found;
    } else if (word == "DELETED") {
      out.kind = Kind::deleted;
    } else if (word == "TOUCHED") {
      out.kind = Kind::touched;
    } else if (word == "ERROR") {
      out.kind = Kind::error;
    } else {
      return Parse::malformed;
    }
  }
  consumed = total;
  return Parse::ok;
}

void append_store(std::string& out, std::string_view command, std::string_view key,
                  std::uint32_t flags, std::int64_t exptime, std::string_view data,
                  std::uint64_t cas) {
  out.append(command).append(" ").append(key).append(" ");
  append_number(out, flags);
  out.append(" ");
  append_number(out, exptime);
  out.append(" ");
  append_number(out, data.size());
  if (command == "cas") {
    out.append(" ");
    append_number(out, cas);
  }
  out.append("\r\n").append(data).append("\r\n");
}

void append_delete(std::string& out, std::string_view key) {
  out.append("delete ").append(key).append("\r\n");
}

void append_touch(std::string& out, std::string_view key, std::int64_t exptime) {
  out.append("touch ").append(key).append(" ");
  append_number(out, exptime);
  out.append("\r\n");
}

}  // namespace dogpile::detail::text
