// Must not compile: the value type has no dogpile::Codec.
#include <dogpile/region.hpp>

#include <vector>

std::vector<std::string> use(dogpile::CacheRegion& region) {
  return region.get_or_create("k", [] { return std::vector<std::string>{"a"}; });
}
