// SPDX-License-Identifier: MIT
// libFuzzer target: the memcached meta-protocol reply parser, fed any bytes as
// a pipeline of replies (parse one, advance by `consumed`, until it needs more
// or refuses). Parsing never reads outside the buffer (ASan) or overflows
// (UBSan); an ok reply consumes at least one byte and no more than is left;
// its views (data, message, key, opaque) lie inside what it consumed; a VA's
// data is as long as the length in its header, no longer than the limit, and
// ends right before a CRLF. Then the same bytes are fed to a batch of eight
// requests as replies arriving in pieces: each request is answered at most
// once, in order, and whatever the batch refuses it refuses by throwing.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>

#include <exception>
#include <string>

#include "transport/meta/meta_batch.hpp"
#include "transport/meta/meta_protocol.hpp"

using namespace dogpile::detail::meta;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool inside(std::string_view view, std::string_view buffer) {
  if (view.empty()) return true;
  return view.data() >= buffer.data() && view.data() + view.size() <= buffer.data() + buffer.size();
}

// The length a VA header declares: its second space-separated token.
std::size_t declared_length(std::string_view header) {
  std::size_t at = header.find("VA");
  check(at != std::string_view::npos);
  at += 2;
  while (at < header.size() && header[at] == ' ') ++at;
  std::size_t end = at;
  while (end < header.size() && header[end] != ' ') ++end;
  std::size_t length = 0;
  const auto [ptr, ec] = std::from_chars(header.data() + at, header.data() + end, length);
  check(ec == std::errc() && ptr == header.data() + end);
  return length;
}

}  // namespace

// The input as replies to a batch of eight mg requests (opaques 1 to 8),
// quiet or not, arriving `piece` bytes at a time.
void batch(std::string_view input, bool quiet, std::size_t piece) {
  dogpile::detail::wire::Connection connection(-1);
  int answered[8] = {};
  std::size_t last = 0;
  bool any = false;
  auto write = [](std::size_t i, std::string& out, std::uint32_t opaque) {
    append_mg(out, "k" + std::to_string(i), "v", opaque);
  };
  auto on_reply = [&](std::size_t i, const Reply*) {
    check(i < 8);
    check(!any || i > last);  // in order, each once
    ++answered[i];
    check(answered[i] == 1);
    last = i;
    any = true;
  };
  Batch b("fuzz", 8, quiet, write, on_reply);
  std::string out;
  check(b.produce(out, connection) == 8);
  std::string buffer;
  std::size_t finished = 0;
  try {
    for (std::size_t at = 0; at < input.size(); at += piece) {
      buffer.append(input.substr(at, piece));
      const std::size_t used = b.consume(buffer, 4096, finished);
      check(used <= buffer.size());
      buffer.erase(0, used);
    }
  } catch (const std::exception&) {
    return;  // refused: the connection would be closed
  }
  check(finished <= 8);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte: the largest value allowed (a few sizes), the batch's mode
  // and how the bytes arrive.
  const std::size_t limit = std::size_t{1} << (data[0] & 15);
  batch(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), (data[0] & 16) != 0,
        1 + (data[0] >> 5) * 7);
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  for (;;) {
    Reply reply;
    std::size_t consumed = 0;
    const Parse result = parse_reply(rest, reply, consumed, limit);
    if (result != Parse::ok) break;
    check(consumed > 0 && consumed <= rest.size());
    const std::string_view one = rest.substr(0, consumed);
    // Every reply ends with CRLF, and its status line is the first line.
    check(one.size() >= 2 && one.substr(one.size() - 2) == "\r\n");
    const std::string_view header = one.substr(0, one.find("\r\n"));
    check(inside(reply.data, one));
    check(inside(reply.message, header));
    check(inside(reply.key, header));
    check(inside(reply.opaque, header));
    if (reply.code == Code::va) {
      const std::size_t length = declared_length(header);
      check(reply.data.size() == length);
      check(length <= limit);
      // The data block follows the status line and is followed by the final CRLF.
      check(reply.data.data() == one.data() + header.size() + 2);
      check(header.size() + 2 + length + 2 == one.size());
    } else {
      check(reply.data.empty());
      check(header.size() + 2 == one.size());
    }
    if (reply.code != Code::client_error && reply.code != Code::server_error) {
      check(reply.message.empty());
    }
    rest.remove_prefix(consumed);
  }
  return 0;
}
