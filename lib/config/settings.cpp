// SPDX-License-Identifier: MIT
// A region from settings (dogpile/config.hpp): each key is a row of one
// table, with the kind of value it takes and where that value goes.
#include "dogpile/config.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "base/parse_number.hpp"
#include "config/values.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "dogpile/memory.hpp"
#include "dogpile/region.hpp"

extern char** environ;

namespace dogpile {

namespace {

using detail::is_off;
using detail::lower;
using detail::normal_key;
using detail::parse_duration;
using detail::parse_number;
using detail::parse_size;
using detail::parse_switch;
using detail::trim;

[[noreturn]] void refuse(std::string_view key, std::string_view value, std::string_view expected) {
  throw std::invalid_argument(
      fmt::format("dogpile setting {} = \"{}\": expected {}", key, value, expected));
}

// What the table's rows write into.
struct Target {
  RegionOptions& options;
  std::string transport = "classic";
  std::vector<std::string> servers{};
  std::string transport_options{};  // --NAME=value ... for the transport
  bool local_asked = false;         // a detail of the local tier was set
  bool local_off = false;           // local = off
};

struct Row {
  const char* key;
  const char* expects;
  // False if the value does not parse.
  bool (*apply)(Target&, std::string_view);
};

template <class Set>
bool with_duration(std::string_view v, Set set) {
  const auto d = parse_duration(v);
  if (!d) return false;
  set(*d);
  return true;
}

template <class Set>
bool with_optional_duration(std::string_view v, Set set) {
  if (is_off(v)) {
    set(std::nullopt);
    return true;
  }
  return with_duration(v, [&](Duration d) { set(std::optional<Duration>(d)); });
}

template <class Set>
bool with_size(std::string_view v, Set set) {
  const auto n = parse_size(v);
  if (!n) return false;
  set(*n);
  return true;
}

template <class Set>
bool with_switch(std::string_view v, Set set) {
  const auto b = parse_switch(v);
  if (!b) return false;
  set(*b);
  return true;
}

template <class Set>
bool with_number(std::string_view v, Set set) {
  double x = 0;
  if (!parse_number(trim(v), x) || !std::isfinite(x)) return false;
  set(x);
  return true;
}

template <class Set>
bool with_count(std::string_view v, Set set) {
  std::int64_t n = 0;
  if (!parse_number(trim(v), n) || n < 0) return false;
  set(n);
  return true;
}

LocalTier& local(Target& t) {
  t.local_asked = true;
  if (!t.options.local) t.options.local = LocalTier{};
  return *t.options.local;
}

std::string millis(Duration d) {
  return std::to_string(std::chrono::ceil<std::chrono::milliseconds>(d).count());
}

constexpr const char* kDuration = "a duration with a unit (500ms, 5s, 5m, 2h, 1d)";
constexpr const char* kOptionalDuration = "a duration with a unit (500ms, 5s, 5m), or off";
constexpr const char* kSize = "a size (1048576, 64KB, 32MiB)";
constexpr const char* kSwitch = "true or false (on/off, yes/no)";
constexpr const char* kCount = "a whole number";

const Row kRows[] = {
    {"transport", "classic, meta or memory",
     [](Target& t, std::string_view v) {
       const std::string name = lower(trim(v));
       if (name != "classic" && name != "meta" && name != "memory") return false;
       t.transport = name;
       return true;
     }},
    {"servers", "host:port, host:port, ...",
     [](Target& t, std::string_view v) {
       t.servers.clear();
       std::size_t start = 0;
       while (start <= v.size()) {
         const auto comma = v.find(',', start);
         const auto one =
             trim(v.substr(start, comma == std::string_view::npos ? v.npos : comma - start));
         if (one.empty() || one.find_first_of(" \t=") != std::string_view::npos) return false;
         t.servers.emplace_back(one);
         if (comma == std::string_view::npos) break;
         start = comma + 1;
       }
       return !t.servers.empty();
     }},
    {"connect_timeout", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(
           v, [&](Duration d) { t.transport_options += " --CONNECT-TIMEOUT=" + millis(d); });
     }},
    {"poll_timeout", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(
           v, [&](Duration d) { t.transport_options += " --POLL-TIMEOUT=" + millis(d); });
     }},
    {"retry_timeout", "a duration in whole seconds, at least 1s",
     [](Target& t, std::string_view v) {
       const auto d = parse_duration(v);
       if (!d || *d < std::chrono::seconds(1) || *d % std::chrono::seconds(1) != Duration::zero()) {
         return false;
       }
       t.transport_options += fmt::format(
           " --RETRY-TIMEOUT={}", std::chrono::duration_cast<std::chrono::seconds>(*d).count());
       return true;
     }},
    {"pool_max", kCount,
     [](Target& t, std::string_view v) {
       return with_count(
           v, [&](std::int64_t n) { t.transport_options += fmt::format(" --POOL-MAX={}", n); });
     }},
    {"transport_options", "the transport's options (--NAME=value ...)",
     [](Target& t, std::string_view v) {
       if (trim(v).empty()) return false;
       t.transport_options += " ";
       t.transport_options += trim(v);
       return true;
     }},
    {"expiration", "a duration with a unit (500ms, 5s, 5m, 2h, 1d), or none",
     [](Target& t, std::string_view v) {
       return with_optional_duration(v,
                                     [&](std::optional<Duration> d) { t.options.expiration = d; });
     }},
    {"stale_grace", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(v, [&](Duration d) { t.options.stale_grace = d; });
     }},
    {"lock_timeout", "a duration in whole seconds (30s)",
     [](Target& t, std::string_view v) {
       const auto d = parse_duration(v);
       if (!d || *d % std::chrono::seconds(1) != Duration::zero()) return false;
       t.options.lock_timeout = std::chrono::duration_cast<std::chrono::seconds>(*d);
       return true;
     }},
    {"max_creation", "a duration with a unit, or none",
     [](Target& t, std::string_view v) {
       return with_optional_duration(
           v, [&](std::optional<Duration> d) { t.options.max_creation = d; });
     }},
    {"key_prefix", "a prefix",
     [](Target& t, std::string_view v) {
       t.options.key_prefix = std::string(trim(v));
       return true;
     }},
    {"deadline", kOptionalDuration,
     [](Target& t, std::string_view v) {
       return with_optional_duration(v, [&](std::optional<Duration> d) { t.options.deadline = d; });
     }},
    {"clock_sync", kOptionalDuration,
     [](Target& t, std::string_view v) {
       return with_optional_duration(v,
                                     [&](std::optional<Duration> d) { t.options.clock_sync = d; });
     }},
    {"background_refresh", kSwitch,
     [](Target& t, std::string_view v) {
       return with_switch(v, [&](bool b) { t.options.background_refresh = b; });
     }},
    {"serve_stale_on_error", kSwitch,
     [](Target& t, std::string_view v) {
       return with_switch(v, [&](bool b) { t.options.serve_stale_on_error = b; });
     }},
    {"early_recompute_beta", "a positive number, or off",
     [](Target& t, std::string_view v) {
       if (is_off(v)) {
         t.options.early_recompute_beta = std::nullopt;
         return true;
       }
       return with_number(v, [&](double x) { t.options.early_recompute_beta = x; });
     }},
    {"invalidation_check", kOptionalDuration,
     [](Target& t, std::string_view v) {
       return with_optional_duration(
           v, [&](std::optional<Duration> d) { t.options.invalidation_check = d; });
     }},
    {"degraded_entries", kCount,
     [](Target& t, std::string_view v) {
       return with_count(
           v, [&](std::int64_t n) { t.options.degraded_entries = static_cast<std::size_t>(n); });
     }},
    {"degraded_bytes", kSize,
     [](Target& t, std::string_view v) {
       return with_size(v, [&](std::size_t n) { t.options.degraded_bytes = n; });
     }},
    {"local", kSwitch,
     [](Target& t, std::string_view v) {
       return with_switch(v, [&](bool on) {
         if (on) {
           t.options.local = LocalTier{};
         } else {
           t.options.local = std::nullopt;
           t.local_off = true;
         }
       });
     }},
    {"local_ttl", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(v, [&](Duration d) { local(t).ttl = d; });
     }},
    {"local_max_entries", kCount,
     [](Target& t, std::string_view v) {
       return with_count(
           v, [&](std::int64_t n) { local(t).max_entries = static_cast<std::size_t>(n); });
     }},
    {"local_max_bytes", kSize,
     [](Target& t, std::string_view v) {
       return with_size(v, [&](std::size_t n) { local(t).max_bytes = n; });
     }},
    {"local_revalidate", kSwitch,
     [](Target& t, std::string_view v) {
       return with_switch(v, [&](bool b) { local(t).revalidate = b; });
     }},
    {"local_admission", kSwitch,
     [](Target& t, std::string_view v) {
       return with_switch(v, [&](bool b) { local(t).admission = b; });
     }},
    {"compression_threshold", "a size (64KB), or off",
     [](Target& t, std::string_view v) {
       if (is_off(v)) {
         t.options.compression.threshold = 0;
         return true;
       }
       return with_size(v, [&](std::size_t n) { t.options.compression.threshold = n; });
     }},
    {"compression_level", "a zstd level (1 to 22)",
     [](Target& t, std::string_view v) {
       std::int64_t n = 0;
       if (!parse_number(trim(v), n) || n < 1 || n > 22) return false;
       t.options.compression.level = static_cast<int>(n);
       return true;
     }},
    {"compression_max_size", kSize,
     [](Target& t, std::string_view v) {
       return with_size(v, [&](std::size_t n) { t.options.compression.max_size = n; });
     }},
    {"wait_first_poll", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(v, [&](Duration d) { t.options.wait.first_poll = d; });
     }},
    {"wait_max_poll", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(v, [&](Duration d) { t.options.wait.max_poll = d; });
     }},
    {"wait_growth", "a positive number (0.06)",
     [](Target& t, std::string_view v) {
       return with_number(v, [&](double x) { t.options.wait.growth = x; });
     }},
    {"wait_growth_knee", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(v, [&](Duration d) { t.options.wait.growth_knee = d; });
     }},
    {"wait_max_interval", kDuration,
     [](Target& t, std::string_view v) {
       return with_duration(v, [&](Duration d) { t.options.wait.max_interval = d; });
     }},
    {"wait_polls_per_creation", kCount,
     [](Target& t, std::string_view v) {
       return with_count(v, [&](std::int64_t n) {
         t.options.wait.polls_per_creation = static_cast<int>(std::min<std::int64_t>(n, 1 << 20));
       });
     }},
    {"wait_max_wait", kOptionalDuration,
     [](Target& t, std::string_view v) {
       return with_optional_duration(
           v, [&](std::optional<Duration> d) { t.options.wait.max_wait = d; });
     }},
    {"wait_create_after_max_wait", kSwitch,
     [](Target& t, std::string_view v) {
       return with_switch(v, [&](bool b) { t.options.wait.create_after_max_wait = b; });
     }},
};

const Row* find_row(std::string_view key) {
  for (const Row& row : kRows) {
    if (key == row.key) return &row;
  }
  return nullptr;
}

std::string known_keys() {
  std::string out;
  for (const Row& row : kRows) {
    if (!out.empty()) out += ", ";
    out += row.key;
  }
  return out;
}

// "%2C" and "+" in a URL's query.
std::string unescape(std::string_view s) {
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

}  // namespace

void merge_settings(Settings& into, const Settings& over) {
  for (const auto& [key, value] : over) {
    const std::string normal = normal_key(key);
    for (auto it = into.begin(); it != into.end();) {
      it = normal_key(it->first) == normal ? into.erase(it) : std::next(it);
    }
    into[normal] = value;
  }
}

Settings read_settings(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in)
    throw std::invalid_argument(fmt::format("dogpile settings: cannot read {}", file.string()));
  Settings out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::string_view text = line;
    if (const auto hash = text.find('#'); hash != std::string_view::npos)
      text = text.substr(0, hash);
    text = trim(text);
    if (text.empty()) continue;
    const auto eq = text.find('=');
    if (eq == std::string_view::npos || trim(text.substr(0, eq)).empty()) {
      throw std::invalid_argument(fmt::format(
          "dogpile settings {}:{}: expected key = value, not \"{}\"", file.string(), number, text));
    }
    const std::string key(trim(text.substr(0, eq)));
    if (out.contains(normal_key(key))) {
      throw std::invalid_argument(
          fmt::format("dogpile settings {}:{}: {} is set twice", file.string(), number, key));
    }
    merge_settings(out, {{key, std::string(trim(text.substr(eq + 1)))}});
  }
  return out;
}

Settings settings_from_env(std::string_view prefix) {
  Settings out;
  for (char** env = environ; env != nullptr && *env != nullptr; ++env) {
    const std::string_view entry = *env;
    if (!entry.starts_with(prefix)) continue;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos || eq == prefix.size()) continue;
    // Only the settings: the prefix is shared with other variables (a
    // build's or a tool's), which are not this library's to refuse.
    const std::string key(entry.substr(prefix.size(), eq - prefix.size()));
    if (find_row(normal_key(key)) == nullptr) continue;
    merge_settings(out, {{key, std::string(entry.substr(eq + 1))}});
  }
  return out;
}

Settings settings_from_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    throw std::invalid_argument(fmt::format(
        "dogpile settings URL \"{}\": expected memcached://, memcached+meta:// or memory://", url));
  }
  const std::string scheme = lower(url.substr(0, scheme_end));
  Settings out;
  if (scheme == "memcached") {
    out["transport"] = "classic";
  } else if (scheme == "memcached+meta") {
    out["transport"] = "meta";
  } else if (scheme == "memory") {
    out["transport"] = "memory";
  } else {
    throw std::invalid_argument(fmt::format(
        "dogpile settings URL \"{}\": expected memcached://, memcached+meta:// or memory://", url));
  }
  std::string_view rest = url.substr(scheme_end + 3);
  const auto query_at = rest.find('?');
  std::string_view hosts = rest.substr(0, query_at);
  if (!hosts.empty() && hosts.back() == '/') hosts.remove_suffix(1);
  if (!hosts.empty()) out["servers"] = std::string(hosts);
  if (query_at != std::string_view::npos) {
    std::string_view query = rest.substr(query_at + 1);
    while (!query.empty()) {
      const auto amp = query.find('&');
      const std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
      if (pair.empty()) continue;
      const auto eq = pair.find('=');
      if (eq == std::string_view::npos) {
        throw std::invalid_argument(
            fmt::format("dogpile settings URL: expected key=value, not \"{}\"", pair));
      }
      const std::string key = unescape(pair.substr(0, eq));
      if (out.contains(normal_key(key))) {
        throw std::invalid_argument(fmt::format("dogpile settings URL: {} is set twice", key));
      }
      merge_settings(out, {{key, unescape(pair.substr(eq + 1))}});
    }
  }
  return out;
}

CacheRegion::CacheRegion(RegionConfig config)
    : CacheRegion(std::move(config.backend), std::move(config.options)) {}

RegionConfig region_config(const Settings& settings) {
  RegionConfig config;
  Target target{config.options};
  // Every key once, whatever its spelling.
  std::map<std::string, std::string_view> seen;
  for (const auto& [key, value] : settings) {
    const std::string normal = normal_key(key);
    if (const auto [it, inserted] = seen.try_emplace(normal, key); !inserted) {
      throw std::invalid_argument(
          fmt::format("dogpile settings: {} and {} are the same setting", it->second, key));
    }
    const Row* row = find_row(normal);
    if (row == nullptr) {
      throw std::invalid_argument(
          fmt::format("dogpile setting {}: no such setting (known: {})", key, known_keys()));
    }
  }
  // In the table's order: the transport before its servers, `local` before
  // the local tier's details.
  for (const Row& row : kRows) {
    for (const auto& [key, value] : settings) {
      if (normal_key(key) != row.key) continue;
      if (!row.apply(target, value)) refuse(key, value, row.expects);
    }
  }
  if (target.local_off && target.local_asked) {
    throw std::invalid_argument(
        "dogpile settings: local = off, yet a detail of the local tier (local.ttl, ...) is set");
  }
  if (target.transport == "memory") {
    if (!target.servers.empty() || !target.transport_options.empty()) {
      refuse("servers", fmt::format("{}", fmt::join(target.servers, ",")),
             "no servers for transport = memory");
    }
    config.backend = std::make_shared<MemoryBackend>();
    return config;
  }
  if (target.servers.empty()) {
    throw std::invalid_argument(
        "dogpile settings: servers is missing (host:port, ...; or transport = memory)");
  }
  std::string options;
  for (const auto& server : target.servers) options += fmt::format("--SERVER={} ", server);
  options += target.transport_options;
  try {
    if (target.transport == "meta") {
      config.backend = std::make_shared<MemcachedMetaBackend>(options);
    } else {
      config.backend = std::make_shared<MemcachedBackend>(options);
    }
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("dogpile settings: {}", e.what()));
  }
  return config;
}

}  // namespace dogpile
