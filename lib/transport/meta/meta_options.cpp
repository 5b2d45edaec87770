// SPDX-License-Identifier: MIT
// The meta transport's option string (internal): libmemcached's syntax, the
// options this transport honours.
#include "transport/meta/meta_options.hpp"
#include "base/parse_number.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstdint>
#include <stdexcept>

namespace dogpile::detail::meta {
namespace {

[[noreturn]] void refuse(std::string_view option, std::string_view why) {
  throw std::invalid_argument(fmt::format("MemcachedMetaBackend: option {}: {}", option, why));
}

std::chrono::milliseconds millis(std::string_view option, std::string_view value) {
  std::int64_t v = 0;
  if (!parse_number(value, v) || v <= 0) refuse(option, "expected a positive number");
  return std::chrono::milliseconds(v);
}

}  // namespace

wire::Config parse_options(std::string_view options) {
  wire::Config config;
  config.meta = true;
  std::size_t at = 0;
  while (at < options.size()) {
    while (at < options.size() && (options[at] == ' ' || options[at] == '\t' ||
                                   options[at] == '\n' || options[at] == '\r')) {
      ++at;
    }
    if (at >= options.size()) break;
    std::size_t end = at;
    while (end < options.size() && options[end] != ' ' && options[end] != '\t' &&
           options[end] != '\n' && options[end] != '\r') {
      ++end;
    }
    const std::string_view option = options.substr(at, end - at);
    at = end;
    const auto eq = option.find('=');
    const std::string_view name = option.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : option.substr(eq + 1);
    const bool has_value = eq != std::string_view::npos;
    auto needs_value = [&] {
      if (!has_value || value.empty()) refuse(option, "needs a value");
    };
    if (name == "--SERVER" || name == "--SOCKET") {
      needs_value();
      const bool socket = name == "--SOCKET" || value.front() == '/';
      try {
        config.servers.push_back(wire::parse_server(option, value, socket));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("MemcachedMetaBackend: {}", e.what()));
      }
    } else if (name.starts_with("--GUTTER") || name == "--JOURNAL-MAX") {
      try {
        if (!wire::fleet_option(option, name, value, config)) {
          refuse(option, "not an option this transport honours");
        }
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("MemcachedMetaBackend: {}", e.what()));
      }
    } else if (name == "--CONNECT-TIMEOUT") {
      needs_value();
      config.connect_timeout = millis(option, value);
    } else if (name == "--POLL-TIMEOUT") {
      needs_value();
      config.poll_timeout = millis(option, value);
    } else if (name == "--RETRY-TIMEOUT") {
      needs_value();
      std::int64_t seconds = 0;
      if (!parse_number(value, seconds) || seconds <= 0)
        refuse(option, "expected seconds, at least 1");
      config.retry_timeout = std::chrono::seconds(seconds);
    } else if (name == "--POOL-MAX") {
      needs_value();
      if (!parse_number(value, config.pool_max) || config.pool_max == 0) {
        refuse(option, "expected a positive number");
      }
    } else if (name == "--POOL-MIN") {
      needs_value();
      std::size_t ignored = 0;
      if (!parse_number(value, ignored)) refuse(option, "expected a number");
    } else if (name == "--TCP-KEEPALIVE" && !has_value) {
      config.keepalive = true;
    } else if ((name == "--TCP-NODELAY" || name == "--SUPPORT-CAS" || name == "--VERIFY-KEY") &&
               !has_value) {
      // What this transport always does.
    } else if (name == "--DISTRIBUTION") {
      if (value != "consistent" && value != "ketama") {
        refuse(option, "this transport places keys by ketama only (--DISTRIBUTION=consistent)");
      }
    } else if (name == "--BINARY-PROTOCOL" || name == "--USE-UDP" || name == "--NOREPLY" ||
               name == "--BUFFER-REQUESTS") {
      refuse(option, "dogpile's leases depend on the text meta protocol's replies");
    } else if (name == "--NAMESPACE") {
      refuse(option, "use RegionOptions::key_prefix instead");
    } else {
      refuse(option, "not an option this transport honours");
    }
  }
  if (config.servers.empty()) {
    throw std::invalid_argument("MemcachedMetaBackend: the options name no --SERVER");
  }
  if (config.servers.size() > 1024) {
    throw std::invalid_argument("MemcachedMetaBackend: more than 1024 servers");
  }
  return config;
}

}  // namespace dogpile::detail::meta
