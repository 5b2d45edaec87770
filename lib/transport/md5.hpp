// SPDX-License-Identifier: MIT
// MD5 (RFC 1321) (internal): what ketama placement hashes server names and
// keys with. Not for anything that needs a secure hash.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace dogpile::detail {

using Md5Digest = std::array<std::uint8_t, 16>;

/// The MD5 digest of `data`. Pure; thread-safe.
[[nodiscard]] Md5Digest md5(std::string_view data) noexcept;

}  // namespace dogpile::detail
