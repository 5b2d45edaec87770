// SPDX-License-Identifier: MIT
// Must not compile: a get_or_create_multi creator returning one string, not
// a value per key.
#include <dogpile/region.hpp>

#include <span>
#include <string>
#include <string_view>
#include <vector>

void use(dogpile::CacheRegion& region, const std::vector<std::string>& keys) {
  (void)region.get_or_create_multi(
      keys, [](std::span<const std::string_view>) { return std::string("names"); });
}
