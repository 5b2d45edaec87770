// SPDX-License-Identifier: MIT
// Uses the public headers and library: exits 0 only if the dogpile behaves.
#include <dogpile/dogpile.hpp>

#include <cstdio>
#include <memory>
#include <string>

int main() {
  using namespace std::chrono_literals;
  dogpile::ManualClock clock;
  dogpile::NameRegistry<dogpile::Dogpile<>, dogpile::Duration> registry(
      [&](std::string_view, dogpile::Duration expiration) {
        return dogpile::Dogpile<>(expiration, {.clock = &clock});
      });
  int creations = 0;
  std::string value;
  auto lock = registry.get("consumer", 1min);
  lock->acquire([&] { value = "built " + std::to_string(++creations); });
  lock->acquire([&] { value = "built " + std::to_string(++creations); });
  clock.advance(2min);
  lock->acquire([&] { value = "built " + std::to_string(++creations); });
  // A region (in-process backend) caching a value; both memcached transports
  // constructed (no request is made), so that the link needs libmemcached.
  dogpile::CacheRegion region(std::make_shared<dogpile::MemoryBackend>(), {.expiration = 1min});
  const std::string cached = region.get_or_create("k", [] { return std::string("made once"); });
  const std::string again = region.get_or_create("k", [] { return std::string("made twice"); });
  dogpile::MemcachedBackend classic("--SERVER=127.0.0.1:1");
  dogpile::MemcachedMetaBackend meta("--SERVER=127.0.0.1:1");
  const bool ok = creations == 2 && value == "built 2" && cached == "made once" &&
                  again == "made once" &&
                  dogpile::FileLock::path_for("k", "/tmp").extension() == ".lock";
  std::printf("dogpile %s consumer: %s\n", dogpile::version_string, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
