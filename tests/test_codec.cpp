// SPDX-License-Identifier: MIT
// Codec<T>: the built-in codecs, and refusal of bytes they did not write.
#include <doctest/doctest.h>

// GCC 12 warns that a std::optional<std::optional<int>> may be used
// uninitialized where it is not (a known false positive of nested optionals).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dogpile/codec.hpp"

using dogpile::Codec;

namespace {
struct NoCodec {};
enum class Color : std::uint16_t { red, green, blue };
struct User {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  Color color = Color::red;
  std::optional<std::vector<std::string>> groups;
  bool operator==(const User&) const = default;
};
}  // namespace

template <>
struct dogpile::Codec<User>
    : dogpile::MemberCodec<&User::name, &User::age, &User::tags, &User::color, &User::groups> {};

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
    static_assert(dogpile::Codable<std::vector<std::string>>);
    static_assert(dogpile::Codable<std::map<std::string, std::optional<std::vector<int>>>>);
    static_assert(!dogpile::Codable<long double>);
    static_assert(!dogpile::Codable<std::vector<long double>>);  // an element without a codec
    static_assert(!dogpile::Codable<std::optional<NoCodec>>);
    static_assert(!dogpile::Codable<std::pair<int, NoCodec>>);
  }

  TEST_CASE("optional: empty and present values, and refusals") {
    // round_trip gives std::optional<std::optional<T>>: outer empty is a refusal.
    const auto empty = round_trip(std::optional<std::string>());
    REQUIRE(empty.has_value());
    CHECK_FALSE(empty->has_value());
    const auto blank = round_trip(std::optional<std::string>(""));
    REQUIRE(blank.has_value());
    CHECK(*blank == std::optional<std::string>(""));
    const auto seven = round_trip(std::optional<int>(7));
    REQUIRE(seven.has_value());
    CHECK(*seven == std::optional<int>(7));
    // "not found" cached as a value: distinct from a miss.
    using Profile = std::optional<std::vector<std::string>>;
    const auto none = round_trip(Profile());
    REQUIRE(none.has_value());
    CHECK_FALSE(none->has_value());
    CHECK_FALSE(Codec<std::optional<int>>::decode("").has_value());
    CHECK_FALSE(Codec<std::optional<int>>::decode(std::string_view("\0x", 2)).has_value());
    CHECK_FALSE(Codec<std::optional<int>>::decode("\x02"
                                                  "abcd")
                    .has_value());
    CHECK_FALSE(Codec<std::optional<int>>::decode("\x01"
                                                  "abc")
                    .has_value());  // 3 bytes, not 4
  }

  TEST_CASE("sequences, sets and maps of codable types round-trip") {
    const std::vector<std::string> names{"ada", "", std::string(1000, 'x'),
                                         std::string("\0\r\n", 3)};
    CHECK(round_trip(names) == names);
    CHECK(round_trip(std::vector<int>{}) == std::vector<int>{});
    CHECK(round_trip(std::vector<double>{1.5, -2.25}) == std::vector<double>{1.5, -2.25});
    CHECK(round_trip(std::vector<bool>{true, false, true}) == std::vector<bool>{true, false, true});
    CHECK(round_trip(std::deque<std::int16_t>{1, -2}) == std::deque<std::int16_t>{1, -2});
    CHECK(round_trip(std::list<std::string>{"a", "b"}) == std::list<std::string>{"a", "b"});
    CHECK(round_trip(std::set<int>{3, 1, 2}) == std::set<int>{1, 2, 3});
    CHECK(round_trip(std::multiset<int>{1, 1, 2}) == std::multiset<int>{1, 1, 2});
    CHECK(round_trip(std::unordered_set<std::string>{"x", "y"}) ==
          std::unordered_set<std::string>{"x", "y"});
    const std::map<std::string, std::vector<int>> scores{{"ada", {1, 2}}, {"bob", {}}};
    CHECK(round_trip(scores) == scores);
    const std::unordered_map<int, std::string> by_id{{1, "one"}, {2, "two"}};
    CHECK(round_trip(by_id) == by_id);
    const std::multimap<int, int> pairs{{1, 1}, {1, 2}};
    CHECK(round_trip(pairs) == pairs);
    const std::vector<std::vector<std::string>> nested{{"a"}, {}, {"b", "c"}};
    CHECK(round_trip(nested) == nested);
  }

  TEST_CASE("pairs, tuples and arrays round-trip") {
    CHECK(round_trip(std::pair<std::string, int>("a", 1)) == std::pair<std::string, int>("a", 1));
    const std::tuple<int, std::string, std::optional<double>, std::vector<int>> t{
        1, "two", 3.0, {4, 5}};
    CHECK(round_trip(t) == t);
    CHECK(round_trip(std::array<std::string, 3>{"a", "", "c"}) ==
          std::array<std::string, 3>{"a", "", "c"});
  }

  TEST_CASE("enums and chrono values round-trip") {
    CHECK(round_trip(Color::blue) == Color::blue);
    CHECK(round_trip(std::chrono::milliseconds(-1500)) == std::chrono::milliseconds(-1500));
    const auto when =
        std::chrono::system_clock::time_point(std::chrono::microseconds(1'700'000'000'123'456));
    CHECK(round_trip(when) == when);
    std::string out;
    Codec<Color>::encode(Color::blue, out);
    CHECK(out == std::string("\x02\x00", 2));  // its underlying std::uint16_t
  }

  TEST_CASE("a struct by its members: round-trips, and a changed layout does not decode") {
    const User ada{"Ada", 36, {"admin", "ops"}, Color::green, std::nullopt};
    CHECK(round_trip(ada) == ada);
    const User bob{"Bob", 0, {}, Color::red, std::vector<std::string>{"x"}};
    CHECK(round_trip(bob) == bob);
    // A value written by an older layout (no last member) is a miss.
    std::string old;
    dogpile::MemberCodec<&User::name, &User::age, &User::tags, &User::color>::encode(ada, old);
    CHECK_FALSE(Codec<User>::decode(old).has_value());
  }

  TEST_CASE("composite decoders refuse truncated, padded and hostile bytes, never reading past") {
    using Map = std::map<std::string, std::vector<std::string>>;
    const Map value{{"k", {"v1", "v2"}}, {"j", {}}};
    std::string bytes;
    Codec<Map>::encode(value, bytes);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CHECK_FALSE(Codec<Map>::decode(std::string_view(bytes).substr(0, n)).has_value());
    }
    CHECK_FALSE(Codec<Map>::decode(bytes + "x").has_value());
    // A count of 4 billion elements in 8 bytes: refused before anything is reserved.
    CHECK_FALSE(
        Codec<std::vector<std::string>>::decode(std::string_view("\xff\xff\xff\xff\0\0\0\0", 8))
            .has_value());
    CHECK_FALSE(Codec<std::vector<std::int64_t>>::decode(std::string_view("\x02\0\0\0"
                                                                          "abcdefgh",
                                                                          12))
                    .has_value());
    // A field length past the end.
    CHECK_FALSE(Codec<std::vector<std::string>>::decode(std::string("\x01\0\0\0\xff\0\0\0ab", 10))
                    .has_value());
    // Every byte flipped in turn: a refusal or some value, never a crash
    // (ASan and UBSan run this too).
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      std::string flipped = bytes;
      flipped[i] = static_cast<char>(flipped[i] ^ 0xff);
      (void)Codec<Map>::decode(flipped);
    }
  }
}
