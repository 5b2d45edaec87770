// SPDX-License-Identifier: MIT
// A region from settings (dogpile/config.hpp): a file, the environment, a
// URL-like string; durations and sizes with units; unknown keys and bad
// values refused with the key named.
#include <doctest/doctest.h>

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "dogpile/config.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "dogpile/memory.hpp"
#include "dogpile/region.hpp"

using namespace std::chrono_literals;
using dogpile::Settings;

namespace {

std::string refusal(const Settings& settings) {
  try {
    (void)dogpile::region_config(settings);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(accepted)";
}

std::filesystem::path write_file(const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("dogpile-settings-" + std::to_string(::getpid()) + ".conf");
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_SUITE("config") {
  TEST_CASE("a file: the README's example") {
    const auto path = write_file(
        "# cache.conf\n"
        "servers = 127.0.0.1:11211, 127.0.0.1:11212\n"
        "transport = meta\n"
        "expiration = 5m   # fresh for five minutes\n"
        "\n"
        "local.ttl = 100ms\n");
    const Settings settings = dogpile::read_settings(path);
    std::filesystem::remove(path);
    CHECK(settings.at("local_ttl") == "100ms");  // keys come normalized
    const auto config = dogpile::region_config(settings);
    CHECK(dynamic_cast<dogpile::MemcachedMetaBackend*>(config.backend.get()) != nullptr);
    CHECK(config.options.expiration == dogpile::Expiration(5min));
    REQUIRE(config.options.local.has_value());
    CHECK(config.options.local->ttl == 100ms);
    CHECK(config.options.local->max_entries == dogpile::LocalTier{}.max_entries);
  }

  TEST_CASE("the README's lines: a file, the environment over it") {
    const auto dir =
        std::filesystem::temp_directory_path() / ("dogpile-readme-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "cache.conf") << "servers = 127.0.0.1:11211, 127.0.0.1:11212\n"
                                         "transport = meta\nexpiration = 5m\nlocal.ttl = 100ms\n";
    const auto was = std::filesystem::current_path();
    std::filesystem::current_path(dir);
    ::setenv("DOGPILE_EXPIRATION", "10m", 1);
    {
      auto settings = dogpile::read_settings("cache.conf");
      dogpile::merge_settings(settings, dogpile::settings_from_env());  // the environment wins
      dogpile::CacheRegion users(dogpile::region_config(settings));
      CHECK(users.options().expiration == dogpile::Expiration(10min));
      REQUIRE(users.options().local.has_value());
      CHECK(users.options().local->ttl == 100ms);
    }
    ::unsetenv("DOGPILE_EXPIRATION");
    std::filesystem::current_path(was);
    std::filesystem::remove_all(dir);
  }

  TEST_CASE("a line that is no setting is refused with its file and line") {
    const auto path = write_file("servers = 127.0.0.1:11211\nexpiration 5m\n");
    std::string what;
    try {
      (void)dogpile::read_settings(path);
    } catch (const std::invalid_argument& e) {
      what = e.what();
    }
    std::filesystem::remove(path);
    CHECK(what.find(path.string() + ":2: expected key = value") != std::string::npos);
    // A key set twice, however spelled.
    const auto twice = write_file("servers = 127.0.0.1:11211\nlocal.ttl = 1s\nLOCAL_TTL = 2s\n");
    what.clear();
    try {
      (void)dogpile::read_settings(twice);
    } catch (const std::invalid_argument& e) {
      what = e.what();
    }
    std::filesystem::remove(twice);
    CHECK(what.find(twice.string() + ":3: LOCAL_TTL is set twice") != std::string::npos);
  }

  TEST_CASE("units: durations need one, sizes may have one") {
    const auto config = dogpile::region_config({{"transport", "memory"},
                                                {"expiration", "1.5s"},
                                                {"stale_grace", "2h"},
                                                {"max_creation", "none"},
                                                {"lock_timeout", "45s"},
                                                {"local.max_bytes", "32MiB"},
                                                {"compression.threshold", "64KB"},
                                                {"degraded_bytes", "1048576"},
                                                {"wait.max_wait", "1d"},
                                                {"clock_sync", "off"},
                                                {"background_refresh", "yes"},
                                                {"local.revalidate", "off"},
                                                {"local.admission", "off"}});
    const auto& o = config.options;
    CHECK(o.expiration == dogpile::Expiration(1500ms));
    CHECK(o.stale_grace == 2h);
    CHECK_FALSE(o.max_creation.has_value());
    CHECK(o.lock_timeout == 45s);
    REQUIRE(o.local.has_value());
    CHECK(o.local->max_bytes == 32u * 1024 * 1024);
    CHECK(o.compression.threshold == 64000u);
    CHECK(o.degraded_bytes == 1048576u);
    CHECK(o.wait.max_wait == dogpile::Duration(24h));
    CHECK_FALSE(o.clock_sync.has_value());
    CHECK(o.background_refresh);
    CHECK_FALSE(o.local->revalidate);
    CHECK_FALSE(o.local->admission);
  }

  TEST_CASE("unknown keys and bad values are refused, the key named") {
    CHECK(refusal({{"servers", "127.0.0.1:11211"}, {"expiraton", "5m"}})
              .starts_with("dogpile setting expiraton: no such setting (known: transport, "));
    CHECK(refusal({{"servers", "127.0.0.1:11211"}, {"expiration", "300"}}) ==
          "dogpile setting expiration = \"300\": expected a duration with a unit (500ms, 5s, 5m, "
          "2h, 1d), or none");
    CHECK(refusal({{"transport", "memory"}, {"local.max_bytes", "32 parsecs"}}) ==
          "dogpile setting local.max_bytes = \"32 parsecs\": expected a size (1048576, 64KB, "
          "32MiB)");
    CHECK(refusal({{"transport", "memory"}, {"compression.level", "40"}}) ==
          "dogpile setting compression.level = \"40\": expected a zstd level (1 to 22)");
    CHECK(refusal({{"transport", "redis"}}) ==
          "dogpile setting transport = \"redis\": expected classic, meta or memory");
    CHECK(refusal({{"transport", "memory"}, {"background_refresh", "maybe"}})
              .starts_with("dogpile setting background_refresh = \"maybe\": expected true or"));
    CHECK(refusal({{"transport", "memory"}, {"lock_timeout", "1500ms"}})
              .starts_with("dogpile setting lock_timeout = \"1500ms\": expected a duration in "
                           "whole seconds"));
    CHECK(refusal({{"expiration", "5m"}}) ==
          "dogpile settings: servers is missing (host:port, ...; or transport = memory)");
    CHECK(refusal({{"transport", "memory"}, {"local.ttl", "1s"}, {"LOCAL_TTL", "2s"}}) ==
          "dogpile settings: LOCAL_TTL and local.ttl are the same setting");
    CHECK(refusal({{"transport", "memory"}, {"local", "off"}, {"local.ttl", "1s"}})
              .starts_with("dogpile settings: local = off, yet"));
    // The transport's own refusal, passed on.
    CHECK(refusal({{"servers", "127.0.0.1:11211"}, {"transport_options", "--POLL-TIMOUT=5"}})
              .find("--POLL-TIMOUT=5") != std::string::npos);
  }

  TEST_CASE("the environment: DOGPILE_ variables, and they win when merged") {
    ::setenv("DOGPILE_SERVERS", "127.0.0.1:11311", 1);
    ::setenv("DOGPILE_LOCAL_TTL", "250ms", 1);
    ::setenv("DOGPILE_NOT_A_SETTING", "1", 1);  // a tool's: left alone
    const Settings env = dogpile::settings_from_env();
    ::unsetenv("DOGPILE_SERVERS");
    ::unsetenv("DOGPILE_LOCAL_TTL");
    ::unsetenv("DOGPILE_NOT_A_SETTING");
    CHECK(env.size() == 2);
    CHECK(env.at("servers") == "127.0.0.1:11311");
    CHECK(env.at("local_ttl") == "250ms");
    Settings settings{{"servers", "127.0.0.1:11211"}, {"local.ttl", "1s"}, {"expiration", "1m"}};
    dogpile::merge_settings(settings, env);
    CHECK(settings.size() == 3);
    CHECK(settings.at("servers") == "127.0.0.1:11311");
    CHECK(settings.at("local_ttl") == "250ms");
    const auto config = dogpile::region_config(settings);
    CHECK(dynamic_cast<dogpile::MemcachedBackend*>(config.backend.get()) != nullptr);
    CHECK(config.options.local->ttl == 250ms);
  }

  TEST_CASE("a URL-like string") {
    const Settings s = dogpile::settings_from_url(
        "memcached+meta://127.0.0.1:11211,127.0.0.1:11212/"
        "?expiration=5m&local.max_bytes=32MiB&key_prefix=app%3Av2");
    CHECK(s.at("transport") == "meta");
    CHECK(s.at("servers") == "127.0.0.1:11211,127.0.0.1:11212");
    const auto config = dogpile::region_config(s);
    CHECK(dynamic_cast<dogpile::MemcachedMetaBackend*>(config.backend.get()) != nullptr);
    CHECK(config.options.key_prefix == "app:v2");
    CHECK(config.options.local->max_bytes == 32u << 20);
    CHECK_THROWS_WITH_AS(dogpile::settings_from_url("redis://h:1"),
                         "dogpile settings URL \"redis://h:1\": expected memcached://, "
                         "memcached+meta:// or memory://",
                         std::invalid_argument);
  }

  TEST_CASE("a region made from settings caches") {
    dogpile::CacheRegion region(dogpile::region_config(
        dogpile::settings_from_url("memory://?expiration=1h&clock_sync=off")));
    int made = 0;
    CHECK(region.get_or_create("k", [&] { return ++made; }) == 1);
    CHECK(region.get_or_create("k", [&] { return ++made; }) == 1);
  }
}
