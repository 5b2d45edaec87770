// SPDX-License-Identifier: MIT
// The values of settings as text (internal): keys compared alike, durations
// and sizes with units, switches (dogpile/config.hpp).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

[[nodiscard]] std::string_view trim(std::string_view s);
/// Lower case, `.` and `-` as `_`: local.ttl, LOCAL_TTL and local-ttl are one.
[[nodiscard]] std::string normal_key(std::string_view key);
[[nodiscard]] std::string lower(std::string_view s);
/// "500ms", "5s", "5m", "2h", "1d"; fractions too ("1.5s"); nullopt if not one.
[[nodiscard]] std::optional<Duration> parse_duration(std::string_view text);
/// "32MiB", "64KB", "1048576"; KB, MB, GB are 1000-based, KiB, MiB, GiB 1024-based.
[[nodiscard]] std::optional<std::size_t> parse_size(std::string_view text);
/// true/false, on/off, yes/no, 1/0.
[[nodiscard]] std::optional<bool> parse_switch(std::string_view text);
/// off, none, never, false: a setting that may be turned off.
[[nodiscard]] bool is_off(std::string_view text);

}  // namespace dogpile::detail
