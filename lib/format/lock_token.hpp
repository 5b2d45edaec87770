// SPDX-License-Identifier: MIT
// A token that names one acquisition of a distributed lock (internal).
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace dogpile::detail {

/// 128 random bits. Read from the kernel (getrandom) for every token, so a
/// forked child never repeats its parent's tokens.
using LockToken = std::array<std::uint8_t, 16>;

/// A new token, unique in practice. Thread-safe, fork-safe.
[[nodiscard]] LockToken new_lock_token();

/// The token as 32 lower-case hex digits.
[[nodiscard]] std::string to_hex(const LockToken& token);

}  // namespace dogpile::detail
