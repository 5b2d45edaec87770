// Compression (RegionOptions::compression): large values stored as zstd
// frames, marked in the envelope; read back by any region; corrupt or
// oversized frames are misses, never exceptions or allocations.
#include <doctest/doctest.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dogpile/detail/envelope.hpp"
#include "dogpile/detail/keys.hpp"
#include "dogpile/region.hpp"
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
}
