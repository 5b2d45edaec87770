// SPDX-License-Identifier: MIT
// dogpile/codec/json.hpp: a struct cached as JSON, refusals as misses.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "dogpile/codec/json.hpp"
#include "dogpile/region.hpp"
#include "region_fixture.hpp"

struct Address {
  std::string city;
  std::string country;
  bool operator==(const Address&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Address, city, country)

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
};

// The README's example: an 8-field struct cached as JSON.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(UserProfile, id, name, email, age, active, score, roles, address)
template <>
struct dogpile::Codec<UserProfile> : dogpile::JsonCodec<UserProfile> {};

TEST_SUITE("codec: json") {
  TEST_CASE("a struct of 8 fields is cached as JSON, and read back") {
    const UserProfile ada{42,   "Ada", "ada@example.org", 36,
                          true, 9.5,   {"admin", "ops"},  {"London", "UK"}};
    std::string bytes;
    dogpile::Codec<UserProfile>::encode(ada, bytes);
    CHECK(bytes.starts_with(R"({"active":true,"address":{"city":"London","country":"UK"})"));
    CHECK(dogpile::Codec<UserProfile>::decode(bytes) == ada);

    dogpile::test::check_cached_once(ada, "user:42");
  }

  TEST_CASE("\"not found\" cached as std::optional of a JSON type") {
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
  }

  TEST_CASE("bytes that are not this type's JSON are a miss, never an exception") {
    using C = dogpile::Codec<UserProfile>;
    CHECK_FALSE(C::decode("").has_value());
    CHECK_FALSE(C::decode("{").has_value());
    CHECK_FALSE(C::decode("[1,2,3]").has_value());
    CHECK_FALSE(C::decode(R"({"id":"not a number"})").has_value());
    CHECK_FALSE(C::decode(R"({"id":1})").has_value());  // members missing
    CHECK_FALSE(C::decode(std::string("\xff\xfe\x00", 3)).has_value());
  }

  TEST_CASE("a string with invalid UTF-8 is written with replacements, not thrown") {
    UserProfile odd;
    odd.name = "bad \xff byte";
    std::string bytes;
    dogpile::Codec<UserProfile>::encode(odd, bytes);
    const auto back = dogpile::Codec<UserProfile>::decode(bytes);
    REQUIRE(back.has_value());
    CHECK(back->name == "bad \xEF\xBF\xBD byte");
  }
}
