// SPDX-License-Identifier: MIT
// dogpile/config.hpp — a region built from settings: a file, environment
// variables, a URL-like string, or a map of your own.
//
//   # cache.conf
//   servers = 10.0.0.5:11211, 10.0.0.6:11211
//   transport = meta
//   expiration = 5m
//   local.ttl = 100ms
//
//   auto settings = dogpile::read_settings("cache.conf");
//   dogpile::merge_settings(settings, dogpile::settings_from_env());  // the environment wins
//   dogpile::CacheRegion users(dogpile::region_config(settings));
//
// Keys are case-insensitive, and `.`, `-` and `_` in them are the same
// (local.ttl, local_ttl, DOGPILE_LOCAL_TTL). Durations need a unit (ms, s, m,
// h, d: "500ms", "5m"), sizes may have one (B, KB/MB/GB = 1000-based,
// KiB/MiB/GiB = 1024-based: "32MiB"), switches are true/false/on/off/yes/no.
// An unknown key, or a value that does not parse, is refused with
// std::invalid_argument naming the key; nothing is half-applied.
//
// The keys (RegionOptions unless said):
//   transport            classic (libmemcached, the default) | meta (memcached's
//                        meta protocol, leases in the read) | memory (in-process)
//   servers              host:port, ... (required unless transport = memory)
//   connect_timeout, poll_timeout (durations), retry_timeout (whole seconds),
//   pool_max (a count)   the transport's; transport_options: any more, as the
//                        transport's option string ("--TCP-KEEPALIVE")
//   expiration (a duration, or "none"), stale_grace, lock_timeout (whole
//   seconds), max_creation ("none": never hung), key_prefix, deadline,
//   clock_sync ("off"), background_refresh, serve_stale_on_error,
//   early_recompute_beta (a number, or "off"), invalidation_check ("off"),
//   degraded_entries, degraded_bytes,
//   local (on/off), local.ttl, local.max_entries, local.max_bytes,
//   local.revalidate (on/off), local.admission (on/off),
//   compression.threshold, compression.level, compression.max_size,
//   wait.first_poll, wait.max_poll, wait.growth, wait.growth_knee,
//   wait.max_interval, wait.polls_per_creation, wait.max_wait ("none"),
//   wait.create_after_max_wait
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "dogpile/backend.hpp"
#include "dogpile/options.hpp"

namespace dogpile {

/// Settings by key, as text.
using Settings = std::map<std::string, std::string, std::less<>>;

/// `key = value` lines; `#` starts a comment; blank lines are skipped. A line
/// without `=`, or a key set twice, is refused (std::invalid_argument naming
/// the file and line).
[[nodiscard]] Settings read_settings(const std::filesystem::path& file);

/// The environment variables that start with `prefix` and name a setting, the
/// prefix taken off: DOGPILE_SERVERS=... is the key "servers",
/// DOGPILE_LOCAL_TTL=1s "local_ttl". Others with the prefix are left alone.
[[nodiscard]] Settings settings_from_env(std::string_view prefix = "DOGPILE_");

/// A URL-like string: `memcached://host:port,host:port/?key=value&key=value`
/// (the classic transport), `memcached+meta://...` (the meta transport) or
/// `memory://` (in-process); the query's keys are those above.
[[nodiscard]] Settings settings_from_url(std::string_view url);

/// Puts `over`'s settings into `into`, replacing what it had for the same
/// key (keys compared as region_config() does).
void merge_settings(Settings& into, const Settings& over);

/// A backend and options built from settings (keys above).
struct RegionConfig {
  std::shared_ptr<Backend> backend;
  RegionOptions options;
};

/// Builds the region's backend and options. Throws std::invalid_argument
/// naming the first key that is unknown or whose value does not parse, and
/// what it expected.
[[nodiscard]] RegionConfig region_config(const Settings& settings);

}  // namespace dogpile
