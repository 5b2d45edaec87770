// SPDX-License-Identifier: MIT
// memcached's meta protocol (internal): the reply parser and the request
// builders. The backend talking to a real server is tested in integration/.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/keys.hpp"
#include "transport/meta/meta_protocol.hpp"

using dogpile::detail::is_backend_key;
using dogpile::detail::meta::append_md;
using dogpile::detail::meta::append_mg;
using dogpile::detail::meta::append_mn;
using dogpile::detail::meta::append_ms;
using dogpile::detail::meta::Code;
using dogpile::detail::meta::Parse;
using dogpile::detail::meta::parse_reply;
using dogpile::detail::meta::Reply;

// The largest value the parser is told a server may send (memcached's 1 MiB).
constexpr std::size_t kLimit = std::size_t{1} << 20;

using namespace std::string_literals;

namespace {

struct Parsed {
  Parse result = Parse::more;
  Reply reply;
  std::size_t consumed = 0;
};

// `consumed` is set to a sentinel first: only Parse::ok may change it.
Parsed parse(std::string_view buffer) {
  Parsed p;
  p.consumed = 12345;
  p.result = parse_reply(buffer, p.reply, p.consumed, kLimit);
  return p;
}

// A view lies inside `buffer` (an empty view anywhere is fine).
bool inside(std::string_view view, std::string_view buffer) {
  if (view.empty()) return true;
  return view.data() >= buffer.data() && view.data() + view.size() <= buffer.data() + buffer.size();
}

}  // namespace

TEST_SUITE("meta protocol") {
  TEST_CASE("HD parses with no value and no return flags") {
    const std::string in = "HD\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.consumed == in.size());
    CHECK(p.reply.code == Code::hd);
    CHECK(p.reply.data.empty());
    CHECK(p.reply.message.empty());
    CHECK_FALSE(p.reply.cas.has_value());
    CHECK_FALSE(p.reply.flags.has_value());
    CHECK_FALSE(p.reply.ttl.has_value());
    CHECK(p.reply.key.empty());
    CHECK(p.reply.opaque.empty());
    CHECK_FALSE(p.reply.won);
    CHECK_FALSE(p.reply.held);
    CHECK_FALSE(p.reply.stale);
  }

  TEST_CASE("VA parses its length and takes the data block that follows") {
    const std::string in = "VA 5\r\nhello\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::va);
    CHECK(p.reply.data == "hello");
    CHECK(p.reply.data.data() == in.data() + 6);
    CHECK(p.consumed == in.size());
  }

  TEST_CASE("VA with length 0 has an empty data block") {
    const std::string in = "VA 0 c9 t29 Z\r\n\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::va);
    CHECK(p.reply.data.empty());
    CHECK(p.reply.cas == 9u);
    CHECK(p.reply.ttl == 29);
    CHECK(p.reply.held);
    CHECK(p.consumed == in.size());
  }

  TEST_CASE("EN NF NS EX and MN parse to their codes") {
    const std::vector<std::pair<std::string, Code>> cases = {
        {"EN\r\n", Code::en}, {"NF\r\n", Code::nf}, {"NS\r\n", Code::ns},
        {"EX\r\n", Code::ex}, {"MN\r\n", Code::mn},
    };
    for (const auto& [in, code] : cases) {
      CAPTURE(in);
      const Parsed p = parse(in);
      REQUIRE(p.result == Parse::ok);
      CHECK(p.reply.code == code);
      CHECK(p.consumed == in.size());
      CHECK(p.reply.data.empty());
      CHECK(p.reply.message.empty());
    }
  }

  TEST_CASE("the status codes carry return flags too") {
    const std::string in = "NF O77 k-key-\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::nf);
    CHECK(p.reply.opaque == "77");
    CHECK(p.reply.key == "-key-");
    const Parsed ex = parse("EX c42\r\n");
    REQUIRE(ex.result == Parse::ok);
    CHECK(ex.reply.code == Code::ex);
    CHECK(ex.reply.cas == 42u);
  }

  TEST_CASE("ERROR parses with no message") {
    const std::string in = "ERROR\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::error);
    CHECK(p.reply.message.empty());
    CHECK(p.consumed == in.size());
  }

  TEST_CASE("CLIENT_ERROR and SERVER_ERROR keep their message") {
    const std::string client = "CLIENT_ERROR bad data chunk\r\n";
    const Parsed c = parse(client);
    REQUIRE(c.result == Parse::ok);
    CHECK(c.reply.code == Code::client_error);
    CHECK(c.reply.message == "bad data chunk");
    CHECK(inside(c.reply.message, client));
    CHECK(c.consumed == client.size());

    const std::string server = "SERVER_ERROR object too large for cache\r\n";
    const Parsed s = parse(server);
    REQUIRE(s.result == Parse::ok);
    CHECK(s.reply.code == Code::server_error);
    CHECK(s.reply.message == "object too large for cache");
    CHECK(inside(s.reply.message, server));
    CHECK(s.consumed == server.size());

    // Leading spaces are not part of the message, an absent one is empty.
    const Parsed spaced = parse("SERVER_ERROR   out of memory\r\n");
    REQUIRE(spaced.result == Parse::ok);
    CHECK(spaced.reply.message == "out of memory");
    const Parsed bare = parse("CLIENT_ERROR\r\n");
    REQUIRE(bare.result == Parse::ok);
    CHECK(bare.reply.code == Code::client_error);
    CHECK(bare.reply.message.empty());
  }

  TEST_CASE("return flags c f t k and O are read with their values") {
    const std::string in = "VA 3 c1234567890123 f4294967295 t3600 kmy:key O0a1b W\r\nabc\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::va);
    CHECK(p.reply.data == "abc");
    CHECK(p.reply.cas == 1234567890123u);
    CHECK(p.reply.flags == 4294967295u);
    CHECK(p.reply.ttl == 3600);
    CHECK(p.reply.key == "my:key");
    CHECK(p.reply.opaque == "0a1b");
    CHECK(inside(p.reply.key, in));
    CHECK(inside(p.reply.opaque, in));
    CHECK(p.reply.won);
    CHECK_FALSE(p.reply.held);
    CHECK_FALSE(p.reply.stale);
  }

  TEST_CASE("t-1 is a value that never expires") {
    const Parsed p = parse("VA 3 c1 f0 t-1 W\r\nabc\r\n");
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.ttl == -1);
    CHECK(p.reply.cas == 1u);
    CHECK(p.reply.flags == 0u);
    CHECK(p.reply.won);
  }

  TEST_CASE("the lease flags W Z and X are read alone and together") {
    const Parsed w = parse("HD W\r\n");
    REQUIRE(w.result == Parse::ok);
    CHECK(w.reply.won);
    CHECK_FALSE(w.reply.held);
    CHECK_FALSE(w.reply.stale);

    const Parsed z = parse("EN Z\r\n");
    REQUIRE(z.result == Parse::ok);
    CHECK_FALSE(z.reply.won);
    CHECK(z.reply.held);
    CHECK_FALSE(z.reply.stale);

    const Parsed x = parse("VA 1 X\r\nv\r\n");
    REQUIRE(x.result == Parse::ok);
    CHECK_FALSE(x.reply.won);
    CHECK_FALSE(x.reply.held);
    CHECK(x.reply.stale);

    const Parsed all = parse("VA 1 X Z W\r\nv\r\n");
    REQUIRE(all.result == Parse::ok);
    CHECK(all.reply.won);
    CHECK(all.reply.held);
    CHECK(all.reply.stale);
  }

  TEST_CASE("unknown return flags s3 h1 l0 and b are ignored") {
    const Parsed p = parse("VA 2 s3 h1 l0 b c7\r\nhi\r\n");
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::va);
    CHECK(p.reply.data == "hi");
    CHECK(p.reply.cas == 7u);
    CHECK_FALSE(p.reply.flags.has_value());
    CHECK_FALSE(p.reply.ttl.has_value());
    CHECK_FALSE(p.reply.won);
    CHECK_FALSE(p.reply.held);
    CHECK_FALSE(p.reply.stale);
  }

  TEST_CASE("return flags are read in any order") {
    const std::vector<std::string> orders = {
        "VA 3 c5 f6 t7 kk O8 W X\r\nabc\r\n",
        "VA 3 X W O8 kk t7 f6 c5\r\nabc\r\n",
        "VA 3 t7 O8 c5 X kk W f6\r\nabc\r\n",
    };
    for (const auto& in : orders) {
      CAPTURE(in);
      const Parsed p = parse(in);
      REQUIRE(p.result == Parse::ok);
      CHECK(p.reply.data == "abc");
      CHECK(p.reply.cas == 5u);
      CHECK(p.reply.flags == 6u);
      CHECK(p.reply.ttl == 7);
      CHECK(p.reply.key == "k");
      CHECK(p.reply.opaque == "8");
      CHECK(p.reply.won);
      CHECK_FALSE(p.reply.held);
      CHECK(p.reply.stale);
      CHECK(p.consumed == in.size());
    }
  }

  TEST_CASE("runs of spaces between tokens and at the end are skipped") {
    const std::string in = "VA   3    c5  f6   \r\nabc\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::va);
    CHECK(p.reply.data == "abc");
    CHECK(p.reply.cas == 5u);
    CHECK(p.reply.flags == 6u);
    CHECK(p.consumed == in.size());

    const Parsed hd = parse("HD    t10   \r\n");
    REQUIRE(hd.result == Parse::ok);
    CHECK(hd.reply.code == Code::hd);
    CHECK(hd.reply.ttl == 10);
  }

  TEST_CASE("every proper prefix of a valid reply needs more") {
    const std::vector<std::string> replies = {
        "HD\r\n",
        "HD c5 O12\r\n",
        "EN\r\n",
        "MN\r\n",
        "VA 3 c1 f0 t-1 W\r\nabc\r\n",
        "VA 0 c9 t29 Z\r\n\r\n",
        "VA 6 kkey\r\na\r\nb\r\n\r\n",
        "ERROR\r\n",
        "CLIENT_ERROR bad data chunk\r\n",
        "SERVER_ERROR object too large for cache\r\n",
    };
    for (const auto& reply : replies) {
      for (std::size_t n = 0; n < reply.size(); ++n) {
        const std::string prefix = reply.substr(0, n);
        CAPTURE(prefix);
        const Parsed p = parse(prefix);
        CHECK(p.result == Parse::more);
        CHECK(p.consumed == 12345u);  // untouched
      }
      CAPTURE(reply);
      const Parsed whole = parse(reply);
      CHECK(whole.result == Parse::ok);
      CHECK(whole.consumed == reply.size());
    }
  }

  TEST_CASE("a VA whose data block or final CRLF has not all arrived needs more") {
    CHECK(parse("VA 10 c1\r\n").result == Parse::more);
    CHECK(parse("VA 10 c1\r\n0123456").result == Parse::more);
    CHECK(parse("VA 10 c1\r\n0123456789").result == Parse::more);
    CHECK(parse("VA 10 c1\r\n0123456789\r").result == Parse::more);
    CHECK(parse("VA 10 c1\r\n0123456789\r\n").result == Parse::ok);
  }

  TEST_CASE("an unknown reply code is malformed") {
    CHECK(parse("HELLO\r\n").result == Parse::malformed);
    CHECK(parse("hd\r\n").result == Parse::malformed);
    CHECK(parse("VALUE k 0 1\r\n").result == Parse::malformed);
    CHECK(parse("STORED\r\n").result == Parse::malformed);
    CHECK(parse("\r\n").result == Parse::malformed);
    CHECK(parse("   \r\n").result == Parse::malformed);
    // The consumed count is left alone.
    CHECK(parse("HELLO\r\n").consumed == 12345u);
  }

  TEST_CASE("VA with a missing or non-numeric length is malformed") {
    CHECK(parse("VA\r\n").result == Parse::malformed);
    CHECK(parse("VA abc\r\nabc\r\n").result == Parse::malformed);
    CHECK(parse("VA 3x\r\nabc\r\n").result == Parse::malformed);
    CHECK(parse("VA -3\r\nabc\r\n").result == Parse::malformed);
    CHECK(parse("VA +3\r\nabc\r\n").result == Parse::malformed);
    CHECK(parse("VA c1\r\nabc\r\n").result == Parse::malformed);
  }

  TEST_CASE("VA with a length beyond what a buffer can hold is malformed") {
    // More digits than any size_t holds.
    CHECK(parse("VA 99999999999999999999999999\r\nabc\r\n").result == Parse::malformed);
    // Fits a size_t, but the data and its CRLF would not.
    CHECK(parse("VA 18446744073709551615\r\nabc\r\n").result == Parse::malformed);
    CHECK(parse("VA 18446744073709551614\r\nabc\r\n").result == Parse::malformed);
    // Beyond the largest item: refused at the header, with no byte of data
    // waited for (a server that streams could never complete it).
    CHECK(parse("VA 1099511627776\r\n").result == Parse::malformed);
    CHECK(parse("VA 1048577\r\n").result == Parse::malformed);
    CHECK(parse("VA 1048576\r\n").result == Parse::more);
    Reply reply;
    std::size_t consumed = 0;
    CHECK(parse_reply("VA 5\r\nabcde\r\n", reply, consumed, 4) == Parse::malformed);
    CHECK(parse_reply("VA 4\r\nabcd\r\n", reply, consumed, 4) == Parse::ok);
  }

  TEST_CASE("a time to live out of memcached's range is malformed") {
    CHECK(parse("HD t-1\r\n").result == Parse::ok);
    CHECK(parse("HD t2147483648\r\n").result == Parse::ok);
    CHECK(parse("HD t-2\r\n").result == Parse::malformed);
    CHECK(parse("HD t2147483649\r\n").result == Parse::malformed);
    CHECK(parse("HD t9223372036854775807\r\n").result == Parse::malformed);
  }

  TEST_CASE("VA data not followed by CRLF is malformed") {
    CHECK(parse("VA 3\r\nabcd\r\n").result == Parse::malformed);
    CHECK(parse("VA 3\r\nabcXY").result == Parse::malformed);
    CHECK(parse("VA 3\r\nabc\n\r").result == Parse::malformed);
    CHECK(parse("VA 3\r\nab\r\n").result == Parse::more);  // shorter: could still be data
    CHECK(parse("VA 3\r\nab\r\nX").result == Parse::malformed);
  }

  TEST_CASE("bad numeric return flags are malformed") {
    const std::vector<std::string> bad = {
        "HD cabc\r\n",
        "HD c\r\n",
        "HD c-1\r\n",
        "HD c18446744073709551616\r\n",
        "HD f-1\r\n",
        "HD f4294967296\r\n",
        "HD fx\r\n",
        "HD t\r\n",
        "HD tabc\r\n",
        "HD t99999999999999999999\r\n",
        "HD t1.5\r\n",
        "VA 3 cabc\r\nabc\r\n",
        "VA 3 f4294967296\r\nabc\r\n",
        "EN f-1\r\n",
    };
    for (const auto& in : bad) {
      CAPTURE(in);
      CHECK(parse(in).result == Parse::malformed);
    }
    // The extremes that do fit are read.
    const Parsed p = parse("HD c18446744073709551615 f4294967295 t-1\r\n");
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.cas == 18446744073709551615u);
    CHECK(p.reply.flags == 4294967295u);
    CHECK(p.reply.ttl == -1);
  }

  TEST_CASE("a bad flag is malformed even before the VA data block arrives") {
    CHECK(parse("VA 3 cabc\r\n").result == Parse::malformed);
  }

  TEST_CASE("a status line longer than 4096 bytes without CRLF is malformed") {
    CHECK(parse(std::string(4096, 'x')).result == Parse::more);
    CHECK(parse(std::string(4097, 'x')).result == Parse::malformed);
    CHECK(parse("VA 3 k" + std::string(5000, 'k')).result == Parse::malformed);
    CHECK(parse("HD " + std::string(4093, ' ')).result == Parse::more);  // 4096 bytes
  }

  TEST_CASE("consumed covers exactly one reply when two are pipelined") {
    const std::string first = "VA 2 O1 kp1\r\nv1\r\n";
    const std::string second = "HD O5\r\n";
    const std::string in = first + second;
    const Parsed a = parse(in);
    REQUIRE(a.result == Parse::ok);
    CHECK(a.consumed == first.size());
    CHECK(a.reply.code == Code::va);
    CHECK(a.reply.data == "v1");
    CHECK(a.reply.opaque == "1");
    CHECK(a.reply.key == "p1");

    const Parsed b = parse(std::string_view(in).substr(a.consumed));
    REQUIRE(b.result == Parse::ok);
    CHECK(b.consumed == second.size());
    CHECK(b.reply.code == Code::hd);
    CHECK(b.reply.opaque == "5");
    // The second reply's flags did not leak into the first and back.
    CHECK(b.reply.key.empty());
    CHECK(b.reply.data.empty());
  }

  TEST_CASE("a whole pipeline parses reply by reply to its MN") {
    const std::string in =
        "VA 2 O1 kp1\r\nv1\r\nVA 2 f7 O3\r\nv3\r\nHD O5\r\nEN O6\r\nSERVER_ERROR oops\r\nMN\r\n";
    std::string_view rest = in;
    std::vector<Code> codes;
    std::vector<std::string> opaques;
    Reply reply;
    std::size_t consumed = 0;
    while (!rest.empty()) {
      REQUIRE(parse_reply(rest, reply, consumed, kLimit) == Parse::ok);
      REQUIRE(consumed > 0);
      REQUIRE(consumed <= rest.size());
      codes.push_back(reply.code);
      opaques.emplace_back(reply.opaque);
      if (reply.code == Code::va && reply.opaque == "3") {
        CHECK(reply.data == "v3");
        CHECK(reply.flags == 7u);
        CHECK(reply.key.empty());
      }
      rest.remove_prefix(consumed);
    }
    CHECK(codes ==
          std::vector<Code>{Code::va, Code::va, Code::hd, Code::en, Code::server_error, Code::mn});
    CHECK(opaques == std::vector<std::string>{"1", "3", "5", "6", "", ""});
    // A pipeline cut inside its last reply: what has arrived parses, the rest waits.
    const std::string_view cut = std::string_view(in).substr(0, in.size() - 1);
    rest = cut;
    std::size_t replies = 0;
    while (parse_reply(rest, reply, consumed, kLimit) == Parse::ok) {
      rest.remove_prefix(consumed);
      ++replies;
    }
    CHECK(replies == 5u);
    CHECK(rest == "MN\r");
    CHECK(parse_reply(rest, reply, consumed, kLimit) == Parse::more);
  }

  TEST_CASE("CRLF inside a VA data block of the right length is data") {
    const std::string in = "VA 8 c3\r\nab\r\ncd\r\n\r\nHD\r\n";
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.code == Code::va);
    CHECK(p.reply.data == "ab\r\ncd\r\n");
    CHECK(p.consumed == in.size() - 4);
    const Parsed only_crlf = parse("VA 2\r\n\r\n\r\n");
    REQUIRE(only_crlf.result == Parse::ok);
    CHECK(only_crlf.reply.data == "\r\n");
    // Data that looks like a reply is still data.
    const Parsed lookalike = parse("VA 4\r\nMN\r\n\r\n");
    REQUIRE(lookalike.result == Parse::ok);
    CHECK(lookalike.reply.data == "MN\r\n");
    CHECK(lookalike.consumed == 12u);
  }

  TEST_CASE("binary data with NUL bytes is taken as it is") {
    const std::string in = "VA 4\r\n\0\xff\r\0\r\n"s;
    const Parsed p = parse(in);
    REQUIRE(p.result == Parse::ok);
    CHECK(p.reply.data == "\0\xff\r\0"s);
    CHECK(p.consumed == in.size());
  }

  TEST_CASE("a reply parsed into a used Reply starts from a clean one") {
    Reply reply;
    std::size_t consumed = 0;
    REQUIRE(parse_reply("VA 1 c1 f2 t3 kk O4 W Z X\r\nv\r\n", reply, consumed, kLimit) ==
            Parse::ok);
    REQUIRE(parse_reply("HD\r\n", reply, consumed, kLimit) == Parse::ok);
    CHECK(consumed == 4u);
    CHECK(reply.code == Code::hd);
    CHECK(reply.data.empty());
    CHECK_FALSE(reply.cas.has_value());
    CHECK_FALSE(reply.flags.has_value());
    CHECK_FALSE(reply.ttl.has_value());
    CHECK(reply.key.empty());
    CHECK(reply.opaque.empty());
    CHECK_FALSE(reply.won);
    CHECK_FALSE(reply.held);
    CHECK_FALSE(reply.stale);
  }

  TEST_CASE("the transports' key rule: 1 to 250 bytes of printable ASCII") {
    CHECK_FALSE(is_backend_key(""));
    CHECK(is_backend_key("a"));
    CHECK(is_backend_key(std::string(250, 'k')));
    CHECK_FALSE(is_backend_key(std::string(251, 'k')));
    CHECK_FALSE(is_backend_key("x\r\nflush_all"));
    CHECK_FALSE(is_backend_key("x 2 T0\r\nAB\r\nmd victim\r\nms y"));
    CHECK_FALSE(is_backend_key("a\0b"s));
    for (int b = 0; b < 256; ++b) {
      CAPTURE(b);
      const std::string key = "k" + std::string(1, static_cast<char>(b));
      CHECK(is_backend_key(key) == (b > 0x20 && b < 0x7f));
    }
    CHECK(is_backend_key("ns:user:42|v=1#L"));
  }

  TEST_CASE("append_mg writes the key, the flags and the opaque") {
    std::string out;
    append_mg(out, "k", "v c", 1);
    CHECK(out == "mg k v c O1\r\n");
    out.clear();
    append_mg(out, "user:1", "N30 v c f t", 4294967295u);
    CHECK(out == "mg user:1 N30 v c f t O4294967295\r\n");
    out.clear();
    append_mg(out, "k", "", 0);
    CHECK(out == "mg k O0\r\n");
  }

  TEST_CASE("append_md writes the key, the flags and the opaque") {
    std::string out;
    append_md(out, "k", "C5 q", 7);
    CHECK(out == "md k C5 q O7\r\n");
    out.clear();
    append_md(out, "k", "", 8);
    CHECK(out == "md k O8\r\n");
  }

  TEST_CASE("append_ms writes the length line and the data block") {
    std::string out;
    append_ms(out, "k", "abc", "T10", 2);
    CHECK(out == "ms k 3 T10 O2\r\nabc\r\n");
    out.clear();
    append_ms(out, "k", "", "", 3);
    CHECK(out == "ms k 0 O3\r\n\r\n");
    out.clear();
    append_ms(out, "k", "a\r\nb", "", 4);
    CHECK(out == "ms k 4 O4\r\na\r\nb\r\n");
    out.clear();
    append_ms(out, "key", std::string(1000, 'x'), "T0 F3 C7 MS I q", 5);
    CHECK(out == "ms key 1000 T0 F3 C7 MS I q O5\r\n" + std::string(1000, 'x') + "\r\n");
  }

  TEST_CASE("append_mn writes the no-op") {
    std::string out;
    append_mn(out);
    CHECK(out == "mn\r\n");
  }

  TEST_CASE("the builders append to what the buffer holds") {
    std::string out = "prefix|";
    append_mg(out, "a", "v", 1);
    append_ms(out, "b", "xy", "T1", 2);
    append_md(out, "c", "q", 3);
    append_mn(out);
    CHECK(out == "prefix|mg a v O1\r\nms b 2 T1 O2\r\nxy\r\nmd c q O3\r\nmn\r\n");
  }
}
