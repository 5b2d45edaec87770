// SPDX-License-Identifier: MIT
// A service's first cached values: a struct behind get_or_create, a herd of
// requests that makes one load, a cached() function, the metrics page.
//   hello [--memcached "--SERVER=host:port"]      (default 127.0.0.1:11211)
#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <dogpile/dogpile.hpp>

struct User {
  std::string name;
  int visits = 0;
};
// One line makes User cacheable: its members, in order.
template <>
struct dogpile::Codec<User> : dogpile::MemberCodec<&User::name, &User::visits> {};

User load_user(int id) {  // the slow call the cache protects
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return {"user " + std::to_string(id), id * 10};
}

int main(int argc, char** argv) {
  const std::string servers = argc > 2 ? argv[2] : "--SERVER=127.0.0.1:11211";
  dogpile::CacheRegion region(std::make_shared<dogpile::MemcachedMetaBackend>(servers),
                              {.expiration = std::chrono::minutes(5), .key_prefix = "hello:"});

  std::atomic<int> loads{0};
  std::vector<std::jthread> herd;  // 16 requests for one user, all at once
  for (int i = 0; i < 16; ++i) {
    herd.emplace_back([&] {
      const User user = region.get_or_create("user:7", [&] {
        ++loads;
        return load_user(7);
      });
      if (user.name != "user 7") std::abort();
    });
  }
  herd.clear();  // joined
  std::printf("16 requests for user 7, %d load\n", loads.load());

  auto user = dogpile::cached(region, "user", load_user);  // key: "user|8"
  std::printf("%s has %d visits\n", user(8).name.c_str(), user(8).visits);
  const dogpile::RegionStats s = region.stats();  // or dogpile::prometheus_text(region, "hello")
  std::printf("keys created %llu, waited %llu, hits %llu\n",
              static_cast<unsigned long long>(s.created), static_cast<unsigned long long>(s.waited),
              static_cast<unsigned long long>(s.hits));
  return loads.load() == 1 ? 0 : 1;
}
