// SPDX-License-Identifier: MIT
// memcached's classic text protocol (internal): building requests and parsing
// replies. Pure: no I/O, no allocation but the output string.
//
// Requests: get|gets <key>*; set|add|cas <key> <flags> <exptime> <bytes>
// [<cas>] with a data block; delete <key>; touch <key> <exptime>.
// Replies: VALUE <key> <flags> <bytes> [<cas>] and its data block, per item
// found, then END; STORED | NOT_STORED | EXISTS | NOT_FOUND | DELETED |
// TOUCHED; ERROR | CLIENT_ERROR <message> | SERVER_ERROR <message>.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dogpile::detail::text {

enum class Kind : std::uint8_t {
  value,  // VALUE: one item of a retrieval
  end,    // END: a retrieval is over
  stored,
  not_stored,
  exists,
  not_found,
  deleted,
  touched,
  error,         // ERROR: the server did not know the command
  client_error,  // CLIENT_ERROR <message>
  server_error,  // SERVER_ERROR <message>
};

struct Reply {
  Kind kind = Kind::error;
  std::string_view key;      // value
  std::uint32_t flags = 0;   // value
  std::string_view data;     // value
  std::uint64_t cas = 0;     // value, when the server gave one (gets)
  std::string_view message;  // client_error / server_error
};

enum class Parse : std::uint8_t {
  ok,         // one reply parsed; `consumed` bytes of the buffer were it
  more,       // the buffer holds only part of a reply
  malformed,  // not a reply of this protocol: the connection is out of step
};

/// Parses the reply at the front of `buffer` into `out` (whose views point
/// into `buffer`). A VALUE's key must be a memcached key, its flags 32 bits,
/// its CAS 64; a value longer than `max_value` is malformed as soon as its
/// header is read (nothing is waited for, nothing allocated). Never reads
/// outside `buffer`; never throws.
[[nodiscard]] Parse parse_reply(std::string_view buffer, Reply& out, std::size_t& consumed,
                                std::size_t max_value) noexcept;

/// Appends requests to `out`. Keys are checked by the caller
/// (is_backend_key); `exptime` as memcached reads it.
void append_store(std::string& out, std::string_view command, std::string_view key,
                  std::uint32_t flags, std::int64_t exptime, std::string_view data,
                  std::uint64_t cas = 0);
void append_delete(std::string& out, std::string_view key);
void append_touch(std::string& out, std::string_view key, std::int64_t exptime);

}  // namespace dogpile::detail::text
