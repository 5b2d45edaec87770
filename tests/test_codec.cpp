// Codec<T>: the built-in codecs, and refusal of bytes they did not write.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "dogpile/codec.hpp"

using dogpile::Codec;

namespace {
template <class T>
std::optional<T> round_trip(const T& value) {
  std::string bytes = "prefix";  // encode appends
  Codec<T>::encode(value, bytes);
  return Codec<T>::decode(std::string_view(bytes).substr(6));
}
}  // namespace

TEST_SUITE("codec") {
  TEST_CASE("strings and byte vectors round-trip, every byte value included") {
    std::string all;
    for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
    CHECK(round_trip(all) == all);
    CHECK(round_trip(std::string()) == std::string());
    const std::vector<std::uint8_t> bytes(all.begin(), all.end());
    CHECK(round_trip(bytes) == bytes);
    const std::vector<std::byte> empty;
    CHECK(round_trip(empty) == empty);
  }

  TEST_CASE("arithmetic types round-trip at their limits") {
    CHECK(round_trip(std::numeric_limits<std::int64_t>::min()) ==
          std::numeric_limits<std::int64_t>::min());
    CHECK(round_trip(std::numeric_limits<std::uint32_t>::max()) ==
          std::numeric_limits<std::uint32_t>::max());
    CHECK(round_trip(-0.5) == -0.5);
    CHECK(round_trip(1.25f) == 1.25f);
    CHECK(round_trip(true) == true);
    CHECK(round_trip(false) == false);
    CHECK(round_trip('z') == 'z');
  }

  TEST_CASE("integers are little-endian and fixed width") {
    std::string out;
    Codec<std::uint32_t>::encode(0x01020304u, out);
    CHECK(out == std::string("\x04\x03\x02\x01", 4));
  }

  TEST_CASE("bytes of the wrong size or value do not decode") {
    CHECK_FALSE(Codec<std::int32_t>::decode("abc").has_value());
    CHECK_FALSE(Codec<std::int32_t>::decode("abcde").has_value());
    CHECK_FALSE(Codec<double>::decode("").has_value());
    CHECK_FALSE(Codec<bool>::decode("\x02").has_value());
  }

  TEST_CASE("Codable says which types have a codec") {  // checked at compile time
    static_assert(dogpile::Codable<std::string>);
    static_assert(dogpile::Codable<std::int64_t>);
    static_assert(dogpile::Codable<std::vector<std::byte>>);
    static_assert(!dogpile::Codable<std::vector<std::string>>);
    static_assert(!dogpile::Codable<long double>);
  }
}
