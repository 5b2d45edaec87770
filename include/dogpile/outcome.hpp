// SPDX-License-Identifier: MIT
// dogpile/outcome.hpp — how one call was served: by a Dogpile, a
// CacheRegion, or a cached() wrapper.
#pragma once

#include <cstddef>

namespace dogpile {

/// How one call was served.
enum class Outcome {
  fresh,    ///< a fresh value was returned; no lock was touched
  stale,    ///< an expired value was returned while another caller regenerates
  waited,   ///< no value existed; this caller blocked until another created it
  created,  ///< this caller ran the creator
};

[[nodiscard]] constexpr const char* to_string(Outcome o) noexcept {
  switch (o) {
    case Outcome::fresh:
      return "fresh";
    case Outcome::stale:
      return "stale";
    case Outcome::waited:
      return "waited";
    case Outcome::created:
      return "created";
  }
  return "unknown";
}

/// How many Outcomes there are (for arrays indexed by one).
inline constexpr std::size_t kOutcomes = 4;

}  // namespace dogpile
