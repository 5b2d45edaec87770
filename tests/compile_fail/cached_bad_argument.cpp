// SPDX-License-Identifier: MIT
// Must not compile: the argument type cannot be part of a cache key.
#include <dogpile/cached.hpp>

struct Opaque {};

int use(dogpile::CacheRegion& region) {
  auto wrapped = dogpile::cached(region, "ns", [](Opaque) { return 1; });
  return wrapped(Opaque{});
}
