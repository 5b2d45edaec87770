// SPDX-License-Identifier: MIT
// memcached's meta text protocol (internal): building requests and parsing
// replies. Pure: no I/O, no allocation but the output string.
//
// Requests (memcached >= 1.6; 1.6.18's behaviour):
//   mg <key> <flags>*\r\n                   read (N vivify, R recache, T touch, v c f t k O q)
//   ms <key> <datalen> <flags>*\r\n<data>\r\n  store (C compare, T ttl, F flags, M mode, I, q)
//   md <key> <flags>*\r\n                   delete (C compare, I mark stale, q)
//   mn\r\n                                  no-op: ends a pipeline (MN)
// Replies: HD | VA <len> | EN | NF | NS | EX | MN, each with return flags
// (c<cas> f<flags> t<ttl> k<key> O<opaque> and the lease flags W Z X), a
// VA's data block; or ERROR / CLIENT_ERROR / SERVER_ERROR lines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dogpile::detail::meta {

enum class Code : std::uint8_t {
  hd,            // success (no value)
  va,            // success with a value
  en,            // miss (mg)
  nf,            // not found (ms with C, md)
  ns,            // not stored (ms add/replace)
  ex,            // CAS mismatch (ms/md with C)
  mn,            // end of a pipeline
  error,         // ERROR: the server did not know the command
  client_error,  // CLIENT_ERROR <message>
  server_error,  // SERVER_ERROR <message>
};

struct Reply {
  Code code = Code::error;
  std::string_view data;     // va: the value
  std::string_view message;  // client_error / server_error: the text
  std::optional<std::uint64_t> cas;
  std::optional<std::uint32_t> flags;
  std::optional<std::int64_t> ttl;  // -1: never expires
  std::string_view key;
  std::string_view opaque;
  bool won = false;    // W: this caller may (re)create the value
  bool held = false;   // Z: another caller won it
  bool stale = false;  // X: the item is marked stale
};

enum class Parse : std::uint8_t {
  ok,         // one reply parsed; `consumed` bytes of the buffer were it
  more,       // the buffer holds only part of a reply
  malformed,  // not a meta reply: the connection is out of step, drop it
};

/// Parses the reply at the front of `buffer` into `out` (whose views point
/// into `buffer`). A value longer than `max_value` is malformed as soon as
/// its header is read (nothing is waited for, nothing allocated). Numbers
/// are range-checked: flags 32 bits, CAS 64, a time to live from -1 to 2^31.
/// Never reads outside `buffer`; never throws.
[[nodiscard]] Parse parse_reply(std::string_view buffer, Reply& out, std::size_t& consumed,
                                std::size_t max_value) noexcept;

/// Appends a request line to `out`: the key (checked by the caller:
/// is_backend_key), the flag tokens, space separated (e.g. "N30 v c f t"),
/// and the opaque token O<opaque> that the reply must carry back.
void append_mg(std::string& out, std::string_view key, std::string_view flags,
               std::uint32_t opaque);
void append_md(std::string& out, std::string_view key, std::string_view flags,
               std::uint32_t opaque);
/// ms with its data block.
void append_ms(std::string& out, std::string_view key, std::string_view data,
               std::string_view flags, std::uint32_t opaque);
void append_mn(std::string& out);

}  // namespace dogpile::detail::meta
