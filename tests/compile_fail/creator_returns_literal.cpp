// SPDX-License-Identifier: MIT
// Must not compile: the creator returns a string literal (a const char*).
#include <dogpile/region.hpp>

void use(dogpile::CacheRegion& region) {
  const auto name = region.get_or_create("k", [] { return "Ada"; });
  (void)name;
}
