// SPDX-License-Identifier: MIT
// Must not compile: the creator returns nothing.
#include <dogpile/region.hpp>

void use(dogpile::CacheRegion& region, int& loads) {
  region.get_or_create("k", [&] { ++loads; });
}
