// SPDX-License-Identifier: MIT
// The usage snippet of dogpile/region.hpp, compiled and run against a real
// memcached. The names it leaves to the user are defined here.
#include <doctest/doctest.h>

#include <string>

#include "dogpile/dogpile.hpp"
#include "memcached_server.hpp"

namespace {
int lookups = 0;
std::string load_user_name(int id) {
  ++lookups;
  return "user " + std::to_string(id);
}
}  // namespace

TEST_CASE("region.hpp") {
  dogpile::test::MemcachedServer server;
  const std::string servers = server.options();

  // servers: a libmemcached option string, e.g. "--SERVER=10.0.0.1:11211"
  auto backend = std::make_shared<dogpile::MemcachedBackend>(servers);
  dogpile::CacheRegion region(backend,
                              {.expiration = std::chrono::minutes(5), .key_prefix = "users:"});
  std::string name = region.get_or_create("42", [] { return load_user_name(42); });

  CHECK(name == "user 42");
  CHECK(region.get_or_create("42", [] { return load_user_name(42); }) == "user 42");
  CHECK(lookups == 1);
  CHECK(server.raw("get users:42\r\n").starts_with("VALUE users:42 "));
}
