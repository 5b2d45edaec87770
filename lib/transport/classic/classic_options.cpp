// SPDX-License-Identifier: MIT
#include "transport/classic/classic_options.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace dogpile::detail::classic {

namespace {
constexpr std::string_view kDefaultOptions =
    "--SUPPORT-CAS --VERIFY-KEY --TCP-NODELAY --CONNECT-TIMEOUT=1000 --POLL-TIMEOUT=1000 "
    "--RETRY-TIMEOUT=2 --POOL-MIN=1 --POOL-MAX=64";

}  // namespace

// dogpile's defaults, then the caller's options. libmemcached's parser
// refuses leading or trailing white space, so it is trimmed.
std::string with_defaults(std::string_view config) {
  const auto first = config.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return std::string(kDefaultOptions);
  const auto last = config.find_last_not_of(" \t\r\n");
  return fmt::format("{} {}", kDefaultOptions, config.substr(first, last - first + 1));
}

// The options as tokens: --NAME=value or --NAME.
std::vector<std::pair<std::string_view, std::string_view>> tokens(std::string_view options) {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  std::size_t at = 0;
  while ((at = options.find_first_not_of(" \t\r\n", at)) != std::string_view::npos) {
    const std::size_t end = std::min(options.find_first_of(" \t\r\n", at), options.size());
    const std::string_view token = options.substr(at, end - at);
    const auto eq = token.find('=');
    out.emplace_back(token.substr(0, eq),
                     eq == std::string_view::npos ? std::string_view() : token.substr(eq + 1));
    at = end;
  }
  return out;
}

// `options` without the ones dogpile reads itself (the gutter's and the
// journal's: wire::fleet_option), which libmemcached does not know.
std::string without_fleet_options(std::string_view options) {
  std::string out;
  for (const auto& [name, value] : tokens(options)) {
    if (name == "--GUTTER" || name == "--GUTTER-TTL" || name == "--JOURNAL-MAX") continue;
    if (!out.empty()) out += ' ';
    out.append(name);
    if (value.data() != nullptr) {
      out += '=';
      out.append(value);
    }
  }
  return out;
}

// What libmemcached's parser said, without the pointer and the source path
// it adds: "syntax error, unexpected UNKNOWN_OPTION".
std::string parser_said(std::string_view error) {
  const auto at = error.find("syntax error");
  if (at == std::string_view::npos) return "libmemcached cannot parse it";
  const auto end = error.find(')', at);
  return std::string(error.substr(at, end == std::string_view::npos ? error.npos : end - at));
}

void invalid(std::string_view why) {
  throw std::invalid_argument(fmt::format("dogpile::MemcachedBackend: {}", why));
}

// libmemcached's parse of `options`, with what dogpile cannot honour refused.
memcached_st* parse(const std::string& options) {
  memcached_st* mc = memcached(options.data(), options.size());
  if (mc == nullptr) {
    char error[512] = {};
    libmemcached_check_configuration(options.data(), options.size(), error, sizeof error);
    // libmemcached's parser says "syntax error, unexpected UNKNOWN_OPTION":
    // name the option it stumbled on (the first that fails on its own).
    std::string culprit;
    for (std::size_t at = 0; at < options.size() && culprit.empty();) {
      at = options.find_first_not_of(" \t\r\n", at);
      if (at == std::string::npos) break;
      const std::size_t end = std::min(options.find_first_of(" \t\r\n", at), options.size());
      const std::string token = options.substr(at, end - at);
      char ignored[512] = {};
      if (libmemcached_check_configuration(token.data(), token.size(), ignored, sizeof ignored) !=
          MEMCACHED_SUCCESS) {
        culprit = token;
      }
      at = end;
    }
    invalid(culprit.empty()
                ? fmt::format("cannot parse options \"{}\" ({})", options, parser_said(error))
                : fmt::format("option \"{}\" is not one libmemcached knows, or its value is wrong "
                              "({})",
                              culprit, parser_said(error)));
  }
  struct Rejected {
    memcached_behavior_t behavior;
    const char* option;
    const char* why;
  };
  static constexpr Rejected rejected[] = {
      {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, "--BINARY-PROTOCOL",
       "the lock's compare-and-delete needs the ASCII protocol"},
      {MEMCACHED_BEHAVIOR_USE_UDP, "--USE-UDP", "locks need replies over TCP"},
      {MEMCACHED_BEHAVIOR_NOREPLY, "--NOREPLY", "locks need the server's replies"},
      {MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, "--BUFFER-REQUESTS",
       "locks need each request's reply at once"},
      {MEMCACHED_BEHAVIOR_NUMBER_OF_REPLICAS, "--NUMBER-OF-REPLICAS",
       "a lock and its value live on one server"},
      {MEMCACHED_BEHAVIOR_RANDOMIZE_REPLICA_READ, "--RANDOMIZE-REPLICA-READ",
       "a lock and its value live on one server"},
  };
  for (const auto& r : rejected) {
    if (memcached_behavior_get(mc, r.behavior) != 0) {
      memcached_free(mc);
      invalid(fmt::format("{} is not supported: {}", r.option, r.why));
    }
  }
  memcached_return_t rc;
  const void* ns = memcached_callback_get(mc, MEMCACHED_CALLBACK_NAMESPACE, &rc);
  if (ns != nullptr && *static_cast<const char*>(ns) != '\0') {
    memcached_free(mc);
    invalid("--NAMESPACE is not supported; use RegionOptions::key_prefix");
  }
  if (memcached_server_count(mc) == 0) {
    memcached_free(mc);
    invalid("the options name no server; add --SERVER=host:port");
  }
  // Ketama, weighted, unless the caller chose a distribution.
  if (options.find("--DISTRIBUTION") == std::string::npos) {
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
  }
  return mc;
}

}  // namespace dogpile::detail::classic
