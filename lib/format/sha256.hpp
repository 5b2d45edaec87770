// SPDX-License-Identifier: MIT
// sha256.hpp (internal) — SHA-256 (FIPS 180-4), used to turn arbitrary
// keys into fixed-length, filesystem- and protocol-safe names.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace dogpile::detail {

using Sha256Digest = std::array<std::uint8_t, 32>;

/// The SHA-256 digest of `data`. Pure; thread-safe.
[[nodiscard]] Sha256Digest sha256(std::string_view data) noexcept;

/// The digest as 64 lowercase hex characters.
[[nodiscard]] std::string sha256_hex(std::string_view data);

}  // namespace dogpile::detail
