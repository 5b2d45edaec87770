// SPDX-License-Identifier: MIT
// dogpile/codec/protobuf.hpp: messages cached in their wire format, refusals as misses.
#include <doctest/doctest.h>

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "account.pb.h"
#include "dogpile/codec/protobuf.hpp"
#include "dogpile/region.hpp"
#include "profile.pb.h"
#include "region_fixture.hpp"

namespace {

namespace pb = dogpile::test::pb;

// Including the header is all it takes.
static_assert(dogpile::Codable<pb::Profile>);
static_assert(dogpile::Codable<pb::Account>);
static_assert(dogpile::Codable<std::optional<pb::Profile>>);

pb::Profile ada() {
  pb::Profile p;
  p.set_id(42);
  p.set_name("Ada");
  p.set_email("ada@example.org");
  p.set_age(36);
  p.set_active(true);
  p.set_score(9.5);
  p.add_roles("admin");
  p.add_roles("ops");
  p.mutable_address()->set_city("London");
  p.mutable_address()->set_country("UK");
  return p;
}

bool same(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

}  // namespace

TEST_SUITE("codec: protobuf") {
  TEST_CASE("a message of 8 fields is cached in its wire format, and read back") {
    const pb::Profile profile = ada();
    std::string bytes = "before";  // encode appends
    dogpile::Codec<pb::Profile>::encode(profile, bytes);
    REQUIRE(bytes.starts_with("before"));
    bytes.erase(0, 6);
    CHECK(bytes == profile.SerializeAsString());
    // id = 42, then name = "Ada": field 2, 3 bytes.
    CHECK(bytes.starts_with(std::string("\x08\x2a\x12\x03") + "Ada"));
    const auto back = dogpile::Codec<pb::Profile>::decode(bytes);
    REQUIRE(back.has_value());
    CHECK(same(*back, profile));
    CHECK(back->roles_size() == 2);
    CHECK(back->address().city() == "London");

    dogpile::test::check_cached_once(profile, "user:42", same);
  }

  TEST_CASE("a message of default values is no bytes, and cached as any other") {
    std::string bytes;
    dogpile::Codec<pb::Profile>::encode(pb::Profile(), bytes);
    CHECK(bytes.empty());
    const auto back = dogpile::Codec<pb::Profile>::decode("");
    REQUIRE(back.has_value());
    CHECK(same(*back, pb::Profile()));

    dogpile::test::check_cached_once(pb::Profile(), "user:0", same);
  }

  TEST_CASE("\"not found\" cached as std::optional of a message") {
    dogpile::test::RegionFixture f;
    dogpile::CacheRegion region(f.backend, f.options());
    int loads = 0;
    auto lookup = [&]() -> std::optional<pb::Profile> {
      ++loads;
      return std::nullopt;  // no such user: cached too, so the database is asked once
    };
    CHECK_FALSE(region.get_or_create("user:7", lookup).has_value());
    CHECK_FALSE(region.get_or_create("user:7", lookup).has_value());
    CHECK(loads == 1);

    std::string bytes;
    dogpile::Codec<std::optional<pb::Profile>>::encode(ada(), bytes);
    const auto back = dogpile::Codec<std::optional<pb::Profile>>::decode(bytes);
    REQUIRE(back.has_value());
    REQUIRE(back->has_value());
    CHECK(same(**back, ada()));
  }

  TEST_CASE("bytes that are not a message's wire format are a miss, never an exception") {
    using C = dogpile::Codec<pb::Profile>;
    const std::string refused[] = {
        std::string("\x00", 1),                              // field number 0
        "\x0f",                                              // wire type 7
        "\x08",                                              // a tag, no value
        "\x08\xff\xff",                                      // a varint cut short
        "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  // a varint of 11 bytes
        std::string("\x12\x05") + "Ada",                     // 5 bytes announced, 3 there
        "\x12\xff\xff\xff\xff\x0f",                          // 4 GiB announced
        "\x42\x02\x0a\x05",                                  // the address cut short inside
        "\x0c",                                              // an end-group with no start
        "\x0b\x08\x01",                                      // a group never ended
        "\xff\xff\xff\xff",                                  // a tag cut short
    };
    for (const std::string& bytes : refused) {
      CAPTURE(bytes);
      CHECK_FALSE(C::decode(bytes).has_value());
    }
    // A string that is not UTF-8 (proto3 checks): the parser logs the field's name.
    google::protobuf::LogSilencer quiet;
    CHECK_FALSE(C::decode("\x12\x02\xc3\x28").has_value());
  }

  TEST_CASE("every prefix of an encoding is a miss or the message of its whole fields") {
    const std::string bytes = ada().SerializeAsString();
    int misses = 0;
    for (std::size_t n = 0; n <= bytes.size(); ++n) {
      CAPTURE(n);
      std::optional<pb::Profile> back;
      CHECK_NOTHROW(back = dogpile::Codec<pb::Profile>::decode(bytes.substr(0, n)));
      if (back) {
        // The wire format has no end: a prefix that ends between fields is
        // the message of those fields, exactly.
        CHECK(back->SerializeAsString() == bytes.substr(0, n));
      } else {
        ++misses;
      }
    }
    CHECK(misses > static_cast<int>(bytes.size()) / 2);
  }

  TEST_CASE(
      "a proto2 message missing a required field throws on encode, and its bytes are a miss") {
    pb::Account account;
    account.set_owner("Ada");
    std::string out = "before";
    CHECK_THROWS_WITH_AS(dogpile::Codec<pb::Account>::encode(account, out),
                         doctest::Contains("dogpile.test.pb.Account"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(dogpile::Codec<pb::Account>::encode(account, out),
                         doctest::Contains("never decode"), std::invalid_argument);
    CHECK(out == "before");

    // Bytes someone else wrote without it: a miss, as ParseFromArray would have it.
    CHECK_FALSE(
        dogpile::Codec<pb::Account>::decode(account.SerializePartialAsString()).has_value());
    CHECK_FALSE(dogpile::Codec<pb::Account>::decode("").has_value());

    account.set_id(7);
    out.clear();
    dogpile::Codec<pb::Account>::encode(account, out);
    const auto back = dogpile::Codec<pb::Account>::decode(out);
    REQUIRE(back.has_value());
    CHECK(back->id() == 7);
    CHECK(back->owner() == "Ada");
  }
}
