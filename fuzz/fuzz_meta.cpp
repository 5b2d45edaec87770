// libFuzzer target: the memcached meta-protocol reply parser, fed any bytes as
// a pipeline of replies (parse one, advance by `consumed`, until it needs more
// or refuses). Parsing never reads outside the buffer (ASan) or overflows
// (UBSan); an ok reply consumes at least one byte and no more than is left;
// its views (data, message, key, opaque) lie inside what it consumed; a VA's
// data is as long as the length in its header and ends right before a CRLF.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>

#include "../lib/meta_protocol.hpp"

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

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  for (;;) {
    Reply reply;
    std::size_t consumed = 0;
    const Parse result = parse_reply(rest, reply, consumed);
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
