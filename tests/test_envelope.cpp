// SPDX-License-Identifier: MIT
// The envelope format: what is written, and that anything else is refused.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "format/envelope.hpp"

using namespace std::chrono_literals;
using dogpile::TimePoint;
using namespace dogpile::detail;

namespace {

constexpr std::uint64_t kCheck = 0x0123456789abcdefull;

std::string make(std::string_view payload, TimePoint created, std::chrono::microseconds took,
                 EnvelopeKind kind = EnvelopeKind::value) {
  std::string out;
  begin_envelope(out);
  out.append(payload);
  finish_envelope(out, created, took, kCheck, kind);
  return out;
}

const TimePoint kCreated = TimePoint(1'767'225'600'123'456us);  // 2026-01-01T00:00:00.123456Z

}  // namespace

TEST_SUITE("envelope") {
  TEST_CASE("round trip keeps created_at to the microsecond, the duration and the payload") {
    const std::string payload("value\0with nul", 14);
    const std::string bytes = make(payload, kCreated, 2500us);
    CHECK(bytes.size() == kEnvelopeHeaderSize + payload.size());
    const auto r = decode_envelope(bytes, kEnvelopeFlags);
    REQUIRE(r.envelope.has_value());
    CHECK(r.envelope->created_at == kCreated);
    CHECK(r.envelope->creation_duration == 2500us);
    CHECK(r.envelope->payload == payload);
    CHECK(r.envelope->kind == EnvelopeKind::value);
    CHECK(r.envelope->key_check == kCheck);
  }

  TEST_CASE("the header is laid out as documented") {
    const std::string bytes = make("xy", kCreated, 1us);
    CHECK(bytes.substr(0, 4) == "dgpE");
    CHECK(static_cast<unsigned char>(bytes[4]) == 2);   // version
    CHECK(static_cast<unsigned char>(bytes[5]) == 32);  // header size
    CHECK(bytes[6] == 0);                               // kind: a value
    CHECK(bytes[7] == 0);
    // created_at, little-endian microseconds: 1767225600123456 = 0x0006474846222240
    const unsigned char micros[8] = {0x40, 0x22, 0x22, 0x46, 0x48, 0x47, 0x06, 0x00};
    for (int i = 0; i < 8; ++i) CHECK(static_cast<unsigned char>(bytes[8 + i]) == micros[i]);
    CHECK(static_cast<unsigned char>(bytes[16]) == 1);  // duration
    CHECK(static_cast<unsigned char>(bytes[20]) == 2);  // payload length
    // the key check, little-endian
    const unsigned char check[8] = {0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01};
    for (int i = 0; i < 8; ++i) CHECK(static_cast<unsigned char>(bytes[24 + i]) == check[i]);
    CHECK(bytes.substr(32) == "xy");
  }

  TEST_CASE("an item read for another key is refused as key_mismatch") {
    const std::string bytes = make("v", kCreated, 0us);
    CHECK(decode_envelope(bytes, kEnvelopeFlags, kCheck).envelope.has_value());
    const auto other = decode_envelope(bytes, kEnvelopeFlags, kCheck ^ 1);
    CHECK_FALSE(other.envelope.has_value());
    CHECK(other.error == EnvelopeError::key_mismatch);
  }

  TEST_CASE("a tombstone decodes as one, and carries no payload") {
    const auto r =
        decode_envelope(make("", kCreated, 0us, EnvelopeKind::tombstone), kEnvelopeFlags);
    REQUIRE(r.envelope.has_value());
    CHECK(r.envelope->kind == EnvelopeKind::tombstone);
    std::string with_payload = make("x", kCreated, 0us, EnvelopeKind::tombstone);
    CHECK(decode_envelope(with_payload, kEnvelopeFlags).error == EnvelopeError::bad_header);
    std::string unknown_kind = make("", kCreated, 0us);
    unknown_kind[6] = 7;
    CHECK(decode_envelope(unknown_kind, kEnvelopeFlags).error == EnvelopeError::bad_header);
  }

  TEST_CASE("items of dogpile 0.1 (envelope version 1) are refused as old_version") {
    // Version 1: a 24-byte header without the key check, flags 0x64704501.
    std::string v1 = "dgpE";
    v1 += '\x01';
    v1 += '\x18';
    v1.append(18, '\0');
    v1 += "v";
    const auto r = decode_envelope(v1, kEnvelopeFlagsV1);
    CHECK_FALSE(r.envelope.has_value());
    CHECK(r.error == EnvelopeError::old_version);
  }

  TEST_CASE("an empty payload and a long creation are representable") {
    const auto r = decode_envelope(make("", kCreated, std::chrono::hours(100)), kEnvelopeFlags);
    REQUIRE(r.envelope.has_value());
    CHECK(r.envelope->payload.empty());
    CHECK(r.envelope->creation_duration == std::chrono::microseconds(0xffffffffu));  // saturated
  }

  TEST_CASE("foreign, truncated, corrupt and other-version items are refused with a reason") {
    const std::string good = make("payload", kCreated, 0us);
    auto error_of = [](std::string_view bytes, std::uint32_t flags = kEnvelopeFlags) {
      const auto r = decode_envelope(bytes, flags);
      CHECK_FALSE(r.envelope.has_value());
      return r.error;
    };
    CHECK(error_of(good, 0) == EnvelopeError::foreign_flags);
    CHECK(error_of("") == EnvelopeError::truncated);
    CHECK(error_of("dgp") == EnvelopeError::truncated);
    CHECK(error_of(good.substr(0, 28)) == EnvelopeError::truncated);
    CHECK(error_of(good.substr(0, good.size() - 1)) == EnvelopeError::truncated);
    CHECK(error_of(good + "x") == EnvelopeError::trailing_bytes);
    CHECK(error_of("plain text that someone else stored") == EnvelopeError::bad_magic);
    std::string v3 = good;
    v3[4] = 3;
    CHECK(error_of(v3) == EnvelopeError::wrong_version);
    std::string header = good;
    header[5] = 24;
    CHECK(error_of(header) == EnvelopeError::bad_header);
    std::string unknown_encoding = good;
    unknown_encoding[7] = 2;  // 0 plain and 1 zstd are the only ones
    CHECK(error_of(unknown_encoding) == EnvelopeError::bad_header);
    std::string far_future = good;
    for (int i = 8; i < 16; ++i) far_future[i] = '\xff';
    CHECK(error_of(far_future) == EnvelopeError::bad_header);
  }

  TEST_CASE("a compressed payload: round trip, and every damaged frame refused") {
    std::string payload;
    for (int i = 0; i < 500; ++i) payload += "row " + std::to_string(i % 17) + ";";
    std::string out;
    begin_envelope(out);
    out += payload;
    CHECK(finish_envelope(out, kCreated, 0us, 7, EnvelopeKind::value, {64, 3}) ==
          PayloadEncoding::zstd);
    CHECK(out.size() < payload.size() / 4);
    const auto r = decode_envelope(out, kEnvelopeFlags, 7);
    REQUIRE(r.envelope.has_value());
    CHECK(r.envelope->encoding == PayloadEncoding::zstd);
    std::string scratch;
    EnvelopeError error{};
    const auto bytes = payload_bytes(*r.envelope, scratch, 1 << 20, error);
    REQUIRE(bytes.has_value());
    CHECK(*bytes == payload);
    // Bounded: a reader allowing less refuses it.
    CHECK_FALSE(payload_bytes(*r.envelope, scratch, payload.size() - 1, error).has_value());
    CHECK(error == EnvelopeError::too_large);
    // Every truncation of the frame is refused; every single flipped bit in
    // it is refused or changes nothing decoded (a bit the decoder ignores):
    // never other bytes (the frame's checksum catches what its structure
    // does not).
    const std::string_view frame = r.envelope->payload;
    std::size_t refused = 0, tried = 0, same = 0;
    for (std::size_t n = 0; n < frame.size(); ++n) {
      EnvelopeView cut = *r.envelope;
      cut.payload = frame.substr(0, n);
      ++tried;
      refused += payload_bytes(cut, scratch, 1 << 20, error) ? 0 : 1;
    }
    for (std::size_t i = 0; i < frame.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string flipped(frame);
        flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
        EnvelopeView damaged = *r.envelope;
        damaged.payload = flipped;
        ++tried;
        const auto got = payload_bytes(damaged, scratch, 1 << 20, error);
        refused += got ? 0 : 1;
        same += got && *got == payload ? 1 : 0;
      }
    }
    CHECK(refused + same == tried);
    CHECK(same < 8);  // a handful of ignored bits at most
    MESSAGE(refused, " of ", tried, " damaged frames refused, ", same, " decoded the same");
    // Too small to gain: stored plain.
    std::string small;
    begin_envelope(small);
    small += "tiny";
    CHECK(finish_envelope(small, kCreated, 0us, 7, EnvelopeKind::value, {1, 3}) ==
          PayloadEncoding::plain);
  }

  TEST_CASE("random bytes and random corruptions never decode out of bounds") {
    // Run under ASan+UBSan by scripts/test.sh; here only the results are checked.
    std::mt19937 rng(12345);
    const std::string good = make("some payload bytes", kCreated, 10us);
    int decoded = 0;
    for (int round = 0; round < 20000; ++round) {
      std::string bytes = good;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        switch (rng() % 3) {
          case 0:
            bytes[rng() % bytes.size()] = static_cast<char>(rng());
            break;
          case 1:
            bytes.resize(rng() % (bytes.size() + 1));
            break;
          default:
            bytes.push_back(static_cast<char>(rng()));
        }
        if (bytes.empty()) bytes.push_back('x');
      }
      const auto r = decode_envelope(bytes, kEnvelopeFlags);
      if (r.envelope) {
        ++decoded;
        CHECK(r.envelope->payload.size() == bytes.size() - kEnvelopeHeaderSize);
      }
    }
    CHECK(decoded < 20000);
  }

  TEST_CASE("times before the epoch are stored as the epoch") {
    const auto r = decode_envelope(make("x", TimePoint(-5s), 0us), kEnvelopeFlags);
    REQUIRE(r.envelope.has_value());
    CHECK(r.envelope->created_at == TimePoint());
  }
}
