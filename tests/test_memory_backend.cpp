// SPDX-License-Identifier: MIT
// MemoryBackend: the conformance suite, and what is particular to it.
#include <doctest/doctest.h>

#include "backend_conformance.hpp"
#include "backends.hpp"

using namespace std::chrono_literals;

TEST_CASE_TEMPLATE_INVOKE(backend_conformance, dogpile::test::MemoryFixture,
                          dogpile::test::MinimalFixture);

TEST_SUITE("memory backend") {
  TEST_CASE("expired items stop counting and are swept as new items arrive") {
    dogpile::test::MemoryFixture f;
    for (int i = 0; i < 1000; ++i) f.backend->set("old" + std::to_string(i), {"v", 0}, 5s);
    CHECK(f.backend->size() == 1000);
    f.advance(6s);
    CHECK(f.backend->size() == 0);
    CHECK(f.backend->entries() == 1000);  // expired, still in memory
    // New items trigger sweeps of their shard; none of the old ones is read again.
    for (int i = 0; i < 4000; ++i) f.backend->set("new" + std::to_string(i), {"v", 0}, 0s);
    CHECK(f.backend->size() == 4000);
    CHECK(f.backend->entries() == 4000);
  }

  TEST_CASE("counters count each operation once") {
    dogpile::test::MemoryFixture f;
    auto& b = *f.backend;
    b.set("k", {"v", 0}, 0s);
    (void)b.get("k");
    (void)b.add("k", {"w", 0}, 0s);
    const std::vector<std::string_view> keys{"k", "j"};
    (void)b.get_multi(keys);
    b.remove("k");
    const auto c = b.counters();
    CHECK(c.sets == 1);
    CHECK(c.gets == 1);
    CHECK(c.adds == 1);
    CHECK(c.get_multis == 1);
    CHECK(c.removes == 1);
    CHECK(c.total() == 5);
  }
}
