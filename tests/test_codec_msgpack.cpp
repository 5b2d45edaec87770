// SPDX-License-Identifier: MIT
// dogpile/codec/msgpack.hpp: a struct cached as MessagePack, refusals as misses.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dogpile/codec/msgpack.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"

namespace {

struct Address {
  std::string city;
  std::string country;
  bool operator==(const Address&) const = default;
  MSGPACK_DEFINE_MAP(city, country)
};

struct UserProfile {
  std::int64_t id = 0;
  std::string name;
  std::string email;
  int age = 0;
  bool active = false;
  double score = 0;
  std::vector<std::string> roles;
  Address address;
  bool operator==(const UserProfile&) const = default;
  MSGPACK_DEFINE_MAP(id, name, email, age, active, score, roles, address)
};

// An earlier version of UserProfile: two of its members.
struct UserProfileV1 {
  std::int64_t id = 0;
  std::string name;
  MSGPACK_DEFINE_MAP(id, name)
};

// The same members as an array, without their names.
struct Point {
  std::int32_t x = 0;
  std::int32_t y = 0;
  bool operator==(const Point&) const = default;
  MSGPACK_DEFINE(x, y)
};

const UserProfile ada{42,   "Ada", "ada@example.org", 36,
                      true, 9.5,   {"admin", "ops"},  {"London", "UK"}};

template <class T>
std::string packed(const T& value) {
  std::string bytes;
  dogpile::MsgpackCodec<T>::encode(value, bytes);
  return bytes;
}

}  // namespace

template <>
struct dogpile::Codec<UserProfile> : dogpile::MsgpackCodec<UserProfile> {};
template <>
struct dogpile::Codec<Point> : dogpile::MsgpackCodec<Point> {};

TEST_SUITE("codec: msgpack") {
  TEST_CASE("a struct of 8 fields is cached as MessagePack, and read back") {
    std::string bytes = "before";  // encode appends
    dogpile::Codec<UserProfile>::encode(ada, bytes);
    REQUIRE(bytes.starts_with("before"));
    bytes.erase(0, 6);
    // A map of 8 (0x88) whose first key is the 2-byte string "id" (0xa2), then 42.
    CHECK(bytes.starts_with("\x88\xa2id\x2a"));
    // "address": a map of 2 whose first key is "city" (0xa4), "London" (0xa6).
    CHECK(bytes.find(std::string("\xa7") + "address\x82\xa4" + "city\xa6London") !=
          std::string::npos);
    CHECK(dogpile::Codec<UserProfile>::decode(bytes) == ada);

    dogpile::test::check_cached_once(ada, "user:42");
  }

  TEST_CASE("a struct with MSGPACK_DEFINE is an array, and read back") {
    const std::string bytes = packed(Point{3, -4});
    CHECK(bytes == "\x92\x03\xfc");  // [3, -4]
    CHECK(dogpile::Codec<Point>::decode(bytes) == Point{3, -4});
  }

  TEST_CASE("\"not found\" cached as std::optional of a MessagePack type") {
    dogpile::test::RegionFixture f;
    dogpile::CacheRegion region(f.backend, f.options());
    int loads = 0;
    auto lookup = [&]() -> std::optional<UserProfile> {
      ++loads;
      return std::nullopt;  // no such user: cached too, so the database is asked once
    };
    CHECK_FALSE(region.get_or_create("user:7", lookup).has_value());
    CHECK_FALSE(region.get_or_create("user:7", lookup).has_value());
    CHECK(loads == 1);

    const std::optional<UserProfile> some = ada;
    std::string bytes;
    dogpile::Codec<std::optional<UserProfile>>::encode(some, bytes);
    CHECK(dogpile::Codec<std::optional<UserProfile>>::decode(bytes) == some);
  }

  TEST_CASE("bytes that are not this type's MessagePack are a miss, never an exception") {
    using C = dogpile::Codec<UserProfile>;
    CHECK_FALSE(C::decode("").has_value());
    CHECK_FALSE(C::decode("\xc1").has_value());        // a byte MessagePack never uses
    CHECK_FALSE(C::decode("{\"id\":1}").has_value());  // '{' is the integer 123, then more
    // MessagePack, but not a UserProfile: [1, 2, 3], {"id": "one"}, {"age": 2^40}.
    const std::string huge_age =
        std::string("\x81\xa3") + "age" + '\xcf' + std::string("\0\0\1\0\0\0\0\0", 8);
    for (const std::string& other :
         {std::string("\x93\x01\x02\x03"), std::string("\x81\xa2id\xa3one"), huge_age}) {
      CAPTURE(other);
      CHECK(dogpile::detail::msgpack_shape_ok(other));
      CHECK_FALSE(C::decode(other).has_value());
    }
    CHECK_FALSE(dogpile::Codec<Point>::decode("\x92\x01\xa1x").has_value());  // [1, "x"]
    CHECK_FALSE(dogpile::Codec<Point>::decode(packed(ada)).has_value());
    CHECK_FALSE(C::decode(packed(Point{1, 2})).has_value());
  }

  TEST_CASE("a prefix of an encoding, or an encoding with bytes after it, is a miss") {
    const std::string bytes = packed(ada);
    REQUIRE(dogpile::Codec<UserProfile>::decode(bytes).has_value());
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      CAPTURE(n);
      CHECK_FALSE(dogpile::Codec<UserProfile>::decode(bytes.substr(0, n)).has_value());
    }
    CHECK_FALSE(dogpile::Codec<UserProfile>::decode(bytes + '\xc0').has_value());
    CHECK_FALSE(dogpile::Codec<UserProfile>::decode(bytes + bytes).has_value());
  }

  TEST_CASE("a forged length is refused before anything is allocated for it") {
    // Counts of 2^32 - 1: an array, a map, a string, a binary, an extension.
    for (const char* header : {"\xdd", "\xdf", "\xdb", "\xc6", "\xc9"}) {
      const std::string forged = std::string(header) + "\xff\xff\xff\xff";
      CAPTURE(forged);
      CHECK_FALSE(dogpile::detail::msgpack_shape_ok(forged));
      CHECK_FALSE(dogpile::Codec<UserProfile>::decode(forged).has_value());
      CHECK_FALSE(dogpile::MsgpackCodec<std::vector<std::string>>::decode(forged).has_value());
    }
    // 64 nested arrays, each announcing as many elements as there are bytes:
    // each within the bytes' size, together 64 times more. msgpack::unpack
    // would reserve room for each array's elements before reading one, so the
    // first pass refuses the bytes (they end long before) and unpack never runs.
    std::string nested;
    const std::uint32_t size = 4096;
    for (int i = 0; i < 64; ++i) {
      nested += '\xdd';
      for (int shift = 24; shift >= 0; shift -= 8) nested += static_cast<char>(size >> shift);
    }
    nested.resize(size, '\xc0');  // nils
    CHECK_FALSE(dogpile::detail::msgpack_shape_ok(nested));
    CHECK_FALSE(dogpile::MsgpackCodec<std::vector<std::string>>::decode(nested).has_value());
  }

  TEST_CASE("the bounds admit real encodings: one-byte elements, 64 levels deep") {
    // Each element one byte: containers as large as the bytes allow.
    const std::vector<std::int32_t> zeros(100000, 0);
    std::string bytes;
    dogpile::MsgpackCodec<std::vector<std::int32_t>>::encode(zeros, bytes);
    CHECK(bytes.size() == zeros.size() + 5);
    CHECK(dogpile::MsgpackCodec<std::vector<std::int32_t>>::decode(bytes) == zeros);

    std::map<std::int32_t, std::int32_t> small;
    for (std::int32_t i = 0; i < 100; ++i) small[i] = 0;
    bytes.clear();
    dogpile::MsgpackCodec<std::map<std::int32_t, std::int32_t>>::encode(small, bytes);
    CHECK(dogpile::MsgpackCodec<std::map<std::int32_t, std::int32_t>>::decode(bytes) == small);

    // [[[...[nil]...]]]: 64 arrays deep is read, 65 is not.
    const std::string deepest = std::string(64, '\x91') + '\xc0';
    CHECK(dogpile::detail::msgpack_shape_ok(deepest));
    CHECK_FALSE(dogpile::detail::msgpack_shape_ok('\x91' + deepest));
    CHECK_FALSE(
        dogpile::MsgpackCodec<std::vector<std::string>>::decode('\x91' + deepest).has_value());
  }

  TEST_CASE("a member the bytes lack keeps its default, as msgpack-cxx converts") {
    // Values cached by an earlier version of the struct still decode.
    const std::string bytes = packed(UserProfileV1{7, "Grace"});
    const auto back = dogpile::Codec<UserProfile>::decode(bytes);
    REQUIRE(back.has_value());
    CHECK(back->id == 7);
    CHECK(back->name == "Grace");
    CHECK(back->roles.empty());
    CHECK(back->address == Address{});
  }
}
