// SPDX-License-Identifier: MIT
// Must not compile: a cached_multi function over two arguments.
#include <dogpile/cached.hpp>

#include <span>
#include <string>
#include <vector>

void use(dogpile::CacheRegion& region) {
  auto prices = dogpile::cached_multi(region, "price", [](std::span<const int> skus, int store) {
    return std::vector<int>(skus.size(), store);
  });
  (void)prices(std::vector<int>{1, 2});
}
