// SPDX-License-Identifier: MIT
// Key mapping: any user key becomes a valid memcached key, and distinct user
// keys stay distinct.
#include <doctest/doctest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "format/keys.hpp"

using namespace dogpile::detail;

namespace {

bool valid_memcached_key(std::string_view k) {
  if (k.empty() || k.size() > kMemcachedMaxKey) return false;
  for (char c : k) {
    const auto b = static_cast<unsigned char>(c);
    if (b <= 0x20 || b == 0x7f) return false;
  }
  return true;
}

std::vector<std::string> hostile_keys() {
  std::vector<std::string> keys = {
      "",
      " ",
      "with space",
      "tab\there",
      "x\r\nflush_all\r\n",
      "x\r\nset evil 0 0 1\r\nZ\r\n",
      std::string("nul\0inside", 10),
      std::string("\0", 1),
      "\x7f",
      "\xff\xfe invalid utf-8 \xc3\x28",
      "caf\xc3\xa9",  // valid UTF-8, not ASCII
      "#",
      "#L",
      "a#L",
      std::string(240, 'k'),
      std::string(241, 'k'),
      std::string(10 * 1024, 'x'),
      std::string(10 * 1024, 'x') + "y",
  };
  for (int b = 0; b < 256; ++b) keys.emplace_back(1, static_cast<char>(b));
  return keys;
}

}  // namespace

TEST_SUITE("keys") {
  TEST_CASE("plain keys are kept as they are, after the prefix") {
    CHECK(map_key("", "user:42") == "user:42");
    CHECK(map_key("app:", "user:42") == "app:user:42");
    CHECK(map_key("", std::string(240, 'k')) == std::string(240, 'k'));
  }

  TEST_CASE("unsafe or long keys are hashed to '#' and 64 hex digits") {
    const std::string mapped = map_key("app:", "with space");
    CHECK(mapped.size() == 4 + 1 + 64);
    CHECK(mapped.substr(0, 5) == "app:#");
    CHECK(mapped.find_first_not_of("0123456789abcdef", 5) == std::string::npos);
    CHECK(map_key("", std::string(241, 'k')).size() == 65);
    CHECK(map_key("", "").size() == 65);  // an empty key with no prefix is still a valid key
    CHECK(map_key("p", "") == "p");
  }

  TEST_CASE("every hostile key maps to a valid key, none collide, locks never equal values") {
    for (std::string prefix : {std::string(), std::string("svc:"), std::string(100, 'p')}) {
      std::set<std::string> value_keys;
      std::set<std::string> lock_keys;
      const auto keys = hostile_keys();
      for (const auto& key : keys) {
        const std::string mapped = map_key(prefix, key);
        CHECK(valid_memcached_key(mapped));
        CHECK(valid_memcached_key(lock_key_for(mapped)));
        value_keys.insert(mapped);
        lock_keys.insert(lock_key_for(mapped));
      }
      std::set<std::string> distinct(keys.begin(), keys.end());
      CHECK(value_keys.size() == distinct.size());
      for (const auto& k : lock_keys) CHECK(value_keys.count(k) == 0);
    }
  }

  TEST_CASE("a key cannot pass for another key's hashed form or lock") {
    const std::string hashed = map_key("", "with space");  // "#<hex>"
    CHECK(map_key("", hashed) != hashed);                  // '#' forces hashing
    CHECK(map_key("", lock_key_for("x")) != lock_key_for("x"));
  }

  TEST_CASE("prefixes are checked") {
    CHECK_NOTHROW(validate_key_prefix(""));
    CHECK_NOTHROW(validate_key_prefix("svc:v2:"));
    CHECK_THROWS_AS(validate_key_prefix("has space"), std::invalid_argument);
    CHECK_THROWS_AS(validate_key_prefix("hash#"), std::invalid_argument);
    CHECK_THROWS_AS(validate_key_prefix("nl\n"), std::invalid_argument);
    CHECK_THROWS_AS(validate_key_prefix(std::string(101, 'p')), std::invalid_argument);
  }
}
