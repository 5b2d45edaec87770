// SPDX-License-Identifier: MIT
// The classic transport's option string (internal): dogpile's defaults put
// first, libmemcached's parse of it with what dogpile cannot honour refused.
#pragma once

#include <libmemcached/memcached.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dogpile::detail::classic {

/// dogpile's defaults, then the caller's options (trimmed).
[[nodiscard]] std::string with_defaults(std::string_view config);

/// The options as tokens: (--NAME, value), the value empty for --NAME.
[[nodiscard]] std::vector<std::pair<std::string_view, std::string_view>> tokens(
    std::string_view options);

/// Throws std::invalid_argument naming MemcachedBackend and `why`.
/// `options` without those dogpile reads itself (wire::fleet_option).
[[nodiscard]] std::string without_fleet_options(std::string_view options);

[[noreturn]] void invalid(std::string_view why);

/// libmemcached's parse of `options`, with --BINARY-PROTOCOL, --USE-UDP,
/// --NOREPLY, --BUFFER-REQUESTS, replicas and --NAMESPACE refused (throws
/// std::invalid_argument saying why); weighted ketama unless a
/// --DISTRIBUTION is given. The caller frees it.
[[nodiscard]] memcached_st* parse(const std::string& options);

}  // namespace dogpile::detail::classic
