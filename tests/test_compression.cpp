// SPDX-License-Identifier: MIT
// Compression (RegionOptions::compression): large values stored as zstd
// frames, marked in the envelope; read back by any region; corrupt or
// oversized frames are misses, never exceptions or allocations.
#include <doctest/doctest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dogpile/region.hpp"
#include "format/envelope.hpp"
#include "format/keys.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::test::RegionFixture;

namespace {

// About 100 KB of JSON-like text: compresses well, as cached records do.
std::string records(std::size_t n = 1000) {
  std::string s = "[";
  for (std::size_t i = 0; i < n; ++i) {
    s += R"({"id":)" + std::to_string(i) + R"(,"name":"user )" + std::to_string(i * 7919 % 1000) +
         R"(","active":true,"roles":["reader","writer"]},)";
  }
  s.back() = ']';
  return s;
}

std::string random_bytes(std::size_t n) {
  std::mt19937_64 rng(42);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

dogpile::RegionOptions compressing(RegionFixture& f, std::size_t threshold = 1024) {
  auto o = f.options();
  o.compression.threshold = threshold;
  return o;
}

// The stored item under `key`, and its envelope.
struct Stored {
  dogpile::Item item;
  dogpile::detail::EnvelopeView envelope;
};

Stored stored(RegionFixture& f, dogpile::CacheRegion& region, std::string_view key) {
  auto item = f.backend->get(region.backend_key(key));
  REQUIRE(item.has_value());
  auto decoded = dogpile::detail::decode_envelope(item->data, item->flags);
  REQUIRE(decoded.envelope.has_value());
  return {*item, *decoded.envelope};
}

}  // namespace

TEST_SUITE("compression") {
  TEST_CASE("a value above the threshold is stored as a zstd frame, and served from it") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, compressing(f));
    const std::string value = records();
    CHECK((region.get_or_create("users", f.creator(value)) == value));
    const Stored s = stored(f, region, "users");
    CHECK(s.envelope.encoding == dogpile::detail::PayloadEncoding::zstd);
    // Smaller on the wire by far: the text repeats.
    CHECK(s.item.data.size() * 10 < value.size());
    CHECK(region.stats().compressed == 1);
    // Read back: a fresh hit, the creator not run again.
    CHECK((region.get_or_create("users", f.creator("other")) == value));
    CHECK((region.get<std::string>("users") == value));
    CHECK(f.creator_calls == 1);
    CHECK(f.errors.empty());
  }

  TEST_CASE("below the threshold, or when it would not get smaller, a value is stored plain") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, compressing(f, 4096));
    const std::string small = records(10);
    REQUIRE(small.size() < 4096);
    const std::string noise = random_bytes(64 * 1024);
    CHECK(region.get_or_create("small", f.creator(small)) == small);
    CHECK((region.get_or_create("noise", f.creator(noise)) == noise));
    CHECK(stored(f, region, "small").envelope.encoding == dogpile::detail::PayloadEncoding::plain);
    CHECK(stored(f, region, "noise").envelope.encoding == dogpile::detail::PayloadEncoding::plain);
    CHECK(region.stats().compressed == 0);
    CHECK((region.get<std::string>("noise") == noise));
  }

  TEST_CASE("off by default: a region that does not compress reads compressed values") {
    RegionFixture f;
    dogpile::CacheRegion writer(f.backend, compressing(f));
    dogpile::CacheRegion reader(f.backend, f.options());
    const std::string value = records();
    writer.set("users", value);
    CHECK(stored(f, writer, "users").envelope.encoding == dogpile::detail::PayloadEncoding::zstd);
    CHECK((reader.get_or_create("users", f.creator("made")) == value));
    CHECK(f.creator_calls == 0);
    // What the reader writes is plain.
    reader.set("users", value);
    CHECK(stored(f, reader, "users").envelope.encoding == dogpile::detail::PayloadEncoding::plain);
  }

  TEST_CASE("every write path compresses: set, get_or_create_multi, set_multi") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, compressing(f));
    const std::string a = records(900), b = records(1100);
    std::vector<std::string> keys{"a", "b"};
    auto made = region.get_or_create_multi(keys, [&](std::span<const std::string_view> missing) {
      std::vector<std::string> out;
      for (auto k : missing) out.push_back(k == "a" ? a : b);
      return out;
    });
    CHECK(made == std::vector<std::string>{a, b});
    region.set("c", a);
    region.set_multi(std::vector<std::pair<std::string, std::string>>{{"d", b}});
    for (auto key : {"a", "b", "c", "d"}) {
      CAPTURE(key);
      CHECK(stored(f, region, key).envelope.encoding == dogpile::detail::PayloadEncoding::zstd);
    }
    CHECK(region.stats().compressed == 4);
    CHECK((region.get_multi<std::string>(std::vector<std::string>{"a", "b", "c", "d"}) ==
           std::vector<std::optional<std::string>>{a, b, a, b}));
  }

  TEST_CASE("a corrupt compressed value is a miss and a decode error, never an exception") {
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, compressing(f));
    const std::string value = records();
    region.set("users", value);
    Stored s = stored(f, region, "users");
    // Flip a byte inside the frame's compressed blocks.
    s.item.data[dogpile::detail::kEnvelopeHeaderSize + s.envelope.payload.size() / 2] ^= 0x5a;
    f.backend->set(region.backend_key("users"), s.item, std::chrono::seconds(100));
    CHECK_FALSE(region.get<std::string>("users").has_value());
    CHECK((region.get_or_create("users", f.creator("again")) == "again"));
    CHECK(f.creator_calls == 1);
    CHECK(region.stats().decode_errors >= 1);
    REQUIRE_FALSE(f.errors.empty());
    CHECK(f.errors.front().first == dogpile::ErrorKind::decode);
    CHECK(f.errors.front().second.find("does not decompress") != std::string::npos);
  }

  TEST_CASE("a frame that declares more than max_size is refused before it is allocated") {
    RegionFixture f;
    auto writing = compressing(f);
    dogpile::CacheRegion writer(f.backend, writing);
    auto reading = f.options();
    reading.compression.max_size = 64 * 1024;  // the value is about 100 KB
    dogpile::CacheRegion reader(f.backend, reading);
    const std::string value = records();
    REQUIRE(value.size() > reading.compression.max_size);
    writer.set("users", value);
    CHECK_FALSE(reader.get<std::string>("users").has_value());
    CHECK(reader.stats().decode_errors == 1);
    REQUIRE(f.errors.size() == 1);
    CHECK(f.errors.front().second.find("beyond Compression::max_size") != std::string::npos);
    CHECK((writer.get<std::string>("users") == value));  // within the writer's bound
  }

  TEST_CASE("compression options are checked") {
    RegionFixture f;
    auto o = compressing(f);
    o.compression.level = 0;
    CHECK_THROWS_WITH_AS(dogpile::CacheRegion(f.backend, o),
                         "dogpile::CacheRegion: compression.level is 0; zstd levels run from 1 "
                         "to 19",
                         std::invalid_argument);
    o.compression.level = 3;
    o.compression.max_size = 0;
    CHECK_THROWS_AS(dogpile::CacheRegion(f.backend, o), std::invalid_argument);
  }

  TEST_CASE("a forged frame declaring 2^60 bytes is refused by its size, code too_large") {
    RegionFixture f;
    std::vector<std::string> codes;
    auto options = f.options();
    options.on_error = [&](const dogpile::ErrorEvent& e) { codes.emplace_back(e.code); };
    dogpile::CacheRegion region(f.backend, options);
    // A zstd frame by hand: magic; descriptor (8-byte content size, single
    // segment, checksum); the size, 2^60; one empty raw last block; a checksum.
    std::string frame("\x28\xb5\x2f\xfd\xe4", 5);
    for (int i = 0; i < 8; ++i) frame += static_cast<char>(i == 7 ? 0x10 : 0);
    frame += std::string("\x01\x00\x00", 3);
    frame += std::string(4, '\0');
    std::string envelope;
    dogpile::detail::begin_envelope(envelope);
    envelope += frame;
    dogpile::detail::finish_envelope(envelope, f.clock.now(), 0us,
                                     dogpile::detail::key_check(region.backend_key("k")));
    envelope[7] = 1;  // mark it zstd, as a peer would have
    f.backend->set(region.backend_key("k"),
                   dogpile::Item{envelope, dogpile::detail::kEnvelopeFlags}, 100s);
    CHECK_FALSE(region.get<std::string>("k").has_value());
    CHECK(codes == std::vector<std::string>{"too_large"});
  }

  TEST_CASE("a small frame declaring more than its blocks can make is refused, nothing allocated") {
    // 18 bytes: magic; descriptor (4-byte content size, single segment,
    // checksum); 63 MiB declared; one RLE last block of 100 bytes; a checksum.
    std::string frame("\x28\xb5\x2f\xfd\xa4", 5);
    const std::uint32_t declared = 63u << 20;
    for (int i = 0; i < 4; ++i) frame += static_cast<char>((declared >> (8 * i)) & 0xff);
    const std::uint32_t block = 1u | (1u << 1) | (100u << 3);  // last, RLE, 100 bytes
    for (int i = 0; i < 3; ++i) frame += static_cast<char>((block >> (8 * i)) & 0xff);
    frame += 'a';
    frame += std::string(4, '\0');
    CHECK(dogpile::detail::frame_content_bound(frame) == 100u);
    std::string envelope;
    dogpile::detail::begin_envelope(envelope);
    envelope += frame;
    dogpile::detail::finish_envelope(envelope, dogpile::ManualClock().now(), 0us, 7);
    envelope[7] = 1;  // zstd
    const auto decoded =
        dogpile::detail::decode_envelope(envelope, dogpile::detail::kEnvelopeFlags, 7);
    REQUIRE(decoded.envelope);
    std::string scratch;
    dogpile::detail::EnvelopeError error{};
    CHECK_FALSE(dogpile::detail::payload_bytes(*decoded.envelope, scratch, 64u << 20, error));
    CHECK(error == dogpile::detail::EnvelopeError::bad_compression);
    CHECK(scratch.capacity() < 4096);  // nothing was allocated for the 63 MiB
    // Real frames are within their bound: 100 KB of records, compressed.
    RegionFixture f;
    dogpile::CacheRegion region(f.backend, compressing(f));
    region.set("users", records());
    const auto stored = f.backend->get(region.backend_key("users"));
    REQUIRE(stored);
    const auto real = dogpile::detail::decode_envelope(
        stored->data, stored->flags, dogpile::detail::key_check(region.backend_key("users")));
    REQUIRE(real.envelope);
    CHECK(dogpile::detail::frame_content_bound(real.envelope->payload) >= records().size());
    CHECK((region.get<std::string>("users") == records()));
  }

  TEST_CASE("compressed values on every read path: local tier, stale, metadata, duplicates") {
    RegionFixture f;
    auto options = compressing(f);
    options.local = dogpile::LocalTier{.ttl = 5s};
    dogpile::CacheRegion region(f.backend, options);
    const std::string value = records();
    CHECK((region.get_or_create("users", f.creator(value)) == value));
    // From the local tier: no request, the same value.
    const auto before = f.backend->counters();
    CHECK((region.get_or_create("users", f.creator("other")) == value));
    CHECK(f.since(before).total() == 0);
    CHECK(region.stats().local_hits == 1);
    // A key twice in one multi call.
    std::vector<std::string> keys{"users", "users"};
    auto both = region.get_or_create_multi(keys, [](std::span<const std::string_view> missing) {
      return std::vector<std::string>(missing.size(), "made");
    });
    CHECK((both == std::vector<std::string>{value, value}));
    // Metadata, and the stale value while another caller holds the lock.
    auto meta = region.get_value_metadata<std::string>("users");
    REQUIRE(meta.has_value());
    CHECK((meta->value == value));
    CHECK(meta->fresh);
    f.clock.advance(11s);
    auto lock = f.backend->make_lock(region.backend_key("users"), 30s);
    REQUIRE(lock->try_lock());
    dogpile::Outcome outcome{};
    CHECK((region.get_or_create("users", f.creator("new"), &outcome) == value));
    CHECK(outcome == dogpile::Outcome::stale);
    lock->unlock();
    CHECK(f.creator_calls == 1);
    CHECK(f.errors.empty());
  }
}
