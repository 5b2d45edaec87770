// A token that names one acquisition of a distributed lock (internal).
#pragma once

#include <string>

namespace dogpile::detail {

/// 32 random hex digits, unique per call in practice (128 bits from a
/// per-thread generator seeded from std::random_device). Thread-safe.
[[nodiscard]] std::string new_lock_token();

}  // namespace dogpile::detail
