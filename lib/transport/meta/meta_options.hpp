// SPDX-License-Identifier: MIT
// The meta transport's option string (internal).
#pragma once

#include <string_view>

#include "transport/wire_client.hpp"

namespace dogpile::detail::meta {

/// Parses `options` (e.g. "--SERVER=10.0.0.1:11211/?2 --POLL-TIMEOUT=200"):
/// --SERVER=host[:port][/?weight] (also host:port:weight), --SOCKET=path[/?weight]
/// (a unix socket; also --SERVER=/path), --CONNECT-TIMEOUT=ms,
/// --POLL-TIMEOUT=ms, --RETRY-TIMEOUT=s, --POOL-MIN=n (accepted: connections
/// open on demand), --POOL-MAX=n, --TCP-KEEPALIVE, and the options that only
/// restate what this transport always does (--TCP-NODELAY, --SUPPORT-CAS,
/// --VERIFY-KEY, --DISTRIBUTION=consistent). Anything else is refused, as is
/// a host that is not a name or an address: std::invalid_argument naming the
/// option and why.
[[nodiscard]] wire::Config parse_options(std::string_view options);

}  // namespace dogpile::detail::meta
