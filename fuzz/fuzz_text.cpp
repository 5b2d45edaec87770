// SPDX-License-Identifier: MIT
// libFuzzer target: memcached's classic text protocol. The reply parser, fed
// any bytes as replies one after another: it never reads outside the buffer
// (ASan) or overflows (UBSan); an ok reply consumes at least one byte and no
// more than is left; a VALUE's key is a memcached key, its data as long as
// its header says, no longer than the limit, and inside what was consumed.
// Then the same bytes as replies to a retrieval of eight keys (one `gets`
// line, "k0" to "k7") and to eight commands, arriving in pieces: each item is
// handed over for a key asked for, in order, each command answered at most
// once; what the batches refuse they refuse by throwing.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

#include "format/keys.hpp"
#include "transport/classic/text_batch.hpp"
#include "transport/classic/text_protocol.hpp"

using namespace dogpile::detail::text;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool inside(std::string_view view, std::string_view buffer) {
  if (view.empty()) return true;
  return view.data() >= buffer.data() && view.data() + view.size() <= buffer.data() + buffer.size();
}

template <class Pipeline>
void feed(Pipeline& pipeline, std::string_view input, std::size_t piece) {
  std::string buffer;
  std::size_t finished = 0;
  try {
    for (std::size_t at = 0; at < input.size(); at += piece) {
      buffer.append(input.substr(at, piece));
      const std::size_t used = pipeline.consume(buffer, 4096, finished);
      check(used <= buffer.size());
      buffer.erase(0, used);
    }
  } catch (const std::exception&) {
    return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t limit = std::size_t{1} << (data[0] & 15);
  const std::size_t piece = 1 + (data[0] >> 4) * 5;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  std::string_view rest = input;
  for (;;) {
    Reply reply;
    std::size_t consumed = 0;
    if (parse_reply(rest, reply, consumed, limit) != Parse::ok) break;
    check(consumed > 0 && consumed <= rest.size());
    const std::string_view one = rest.substr(0, consumed);
    check(one.size() >= 2 && one.substr(one.size() - 2) == "\r\n");
    check(inside(reply.data, one));
    check(inside(reply.key, one));
    check(inside(reply.message, one));
    if (reply.kind == Kind::value) {
      check(dogpile::detail::is_backend_key(reply.key));
      check(reply.data.size() <= limit);
    } else {
      check(reply.data.empty());
    }
    rest.remove_prefix(consumed);
  }

  dogpile::detail::wire::Connection connection(-1);
  const std::string keys[8] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"};
  std::size_t next = 0;
  auto key_of = [&](std::size_t i) { return std::string_view(keys[i]); };
  auto on_value = [&](std::size_t i, const Reply& r) {
    check(i < 8 && i >= next);
    check(r.key == keys[i]);
    next = i + 1;
  };
  Retrieval retrieval("fuzz", "gets", 8, key_of, on_value);
  std::string out;
  check(retrieval.produce(out, connection) == 1);
  feed(retrieval, input, piece);

  std::size_t answered = 0;
  auto write = [](std::size_t i, std::string& out) { append_delete(out, "k" + std::to_string(i)); };
  auto on_reply = [&](std::size_t i, const Reply& r) {
    check(i == answered);
    check(r.kind != Kind::value && r.kind != Kind::end);
    ++answered;
  };
  Commands commands("fuzz", 8, write, on_reply);
  out.clear();
  check(commands.produce(out, connection) == 8);
  feed(commands, input, piece);
  return 0;
}
