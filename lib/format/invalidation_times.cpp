// SPDX-License-Identifier: MIT
#include "format/invalidation_times.hpp"

#include <string>
#include <string_view>

#include "dogpile/codec.hpp"

namespace dogpile::detail {

Item InvalidationTimes::encode(std::uint64_t key_check) const {
  Item item{std::string(), kFlags};
  Codec<std::int64_t>::encode(hard, item.data);
  Codec<std::int64_t>::encode(soft, item.data);
  Codec<std::uint64_t>::encode(key_check, item.data);
  return item;
}

std::optional<InvalidationTimes> InvalidationTimes::decode(const Item& item,
                                                           std::uint64_t key_check) noexcept {
  if (item.flags != kFlags || item.data.size() != 24) return std::nullopt;
  const std::string_view bytes(item.data);
  if (*Codec<std::uint64_t>::decode(bytes.substr(16)) != key_check) return std::nullopt;
  return InvalidationTimes{*Codec<std::int64_t>::decode(bytes.substr(0, 8)),
                           *Codec<std::int64_t>::decode(bytes.substr(8, 8))};
}

}  // namespace dogpile::detail
