// SPDX-License-Identifier: MIT
// Must not compile: the value type has no dogpile::Codec.
#include <dogpile/region.hpp>

#include <vector>

struct Profile {
  std::string name;
};

std::vector<Profile> use(dogpile::CacheRegion& region) {
  return region.get_or_create("k", [] { return std::vector<Profile>{{"a"}}; });
}
