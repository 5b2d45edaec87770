// SPDX-License-Identifier: MIT
// Must not compile: get_or_create's creator takes an argument.
#include <dogpile/region.hpp>

int use(dogpile::CacheRegion& region) {
  return region.get_or_create("user:7", [](int id) { return id * 2; });
}
