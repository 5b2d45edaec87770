// SPDX-License-Identifier: MIT
// dogpile/version.hpp — the library's version (the build reads it from here).
#pragma once

#define DOGPILE_VERSION_MAJOR 0
#define DOGPILE_VERSION_MINOR 1
#define DOGPILE_VERSION_PATCH 0

#define DOGPILE_STRINGIFY_(x) #x
#define DOGPILE_STRINGIFY(x) DOGPILE_STRINGIFY_(x)

namespace dogpile {
/// "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string =
    DOGPILE_STRINGIFY(DOGPILE_VERSION_MAJOR) "." DOGPILE_STRINGIFY(
        DOGPILE_VERSION_MINOR) "." DOGPILE_STRINGIFY(DOGPILE_VERSION_PATCH);
}  // namespace dogpile
