// SPDX-License-Identifier: MIT
// Error reporting and counting (internal): every report counted by kind,
// handed to the handler (whose exceptions never escape), or printed at most
// once a second by the default handler.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "engine/counters.hpp"
#include "engine/reporter.hpp"

using dogpile::ErrorEvent;
using dogpile::ErrorKind;
using dogpile::detail::Counters;
using dogpile::detail::Reporter;

TEST_SUITE("reporter") {
  TEST_CASE("each report is counted by its kind and reaches the handler") {
    Counters counters;
    std::vector<std::string> seen;
    Reporter reporter(
        [&](const ErrorEvent& e) {
          seen.push_back(std::string(to_string(e.kind)) + " " + std::string(e.operation) + " " +
                         std::string(e.key) + ": " + std::string(e.message));
        },
        counters);
    reporter.report(ErrorKind::backend, "get", "k", "down");
    reporter.report(ErrorKind::decode, "decode", "k", "garbage");
    reporter.report(ErrorKind::lock, "release lock", "k", "lost");
    reporter.report(ErrorKind::creator, "create", "k", "threw");
    reporter.report(ErrorKind::fenced, "set", "k", "written meanwhile");
    const auto s = counters.snapshot();
    CHECK(s.backend_errors == 1);
    CHECK(s.decode_errors == 1);
    CHECK(s.lock_errors == 1);
    // creator errors and fenced stores are counted where they happen
    CHECK(s.creation_errors == 0);
    CHECK(s.fenced_out == 0);
    REQUIRE(seen.size() == 5);
    CHECK(seen[0] == "backend get k: down");
    CHECK(seen[4] == "fenced set k: written meanwhile");
  }

  TEST_CASE("a throwing handler is swallowed, the handler can be replaced") {
    Counters counters;
    Reporter reporter([](const ErrorEvent&) { throw std::runtime_error("handler bug"); }, counters);
    reporter.report(ErrorKind::backend, "get", "k", "down");  // does not throw
    int calls = 0;
    reporter.set_handler([&](const ErrorEvent&) { ++calls; });
    reporter.report(ErrorKind::backend, "get", "k", "down");
    CHECK(calls == 1);
    CHECK(counters.snapshot().backend_errors == 2);
  }

  TEST_CASE("every counter reaches the snapshot") {
    Counters c;
    Counters::add(c.hits, 1);
    Counters::add(c.misses, 2);
    Counters::add(c.stale_served, 3);
    Counters::add(c.waited, 4);
    Counters::add(c.created, 5);
    Counters::add(c.creation_errors, 6);
    Counters::add(c.lock_waits, 7);
    Counters::add(c.degraded, 8);
    Counters::add(c.backend_errors, 9);
    Counters::add(c.decode_errors, 10);
    Counters::add(c.lock_errors, 11);
    Counters::add(c.early_recomputes, 12);
    Counters::add(c.background_refreshes, 13);
    Counters::add(c.invalidation_checks, 14);
    Counters::add(c.fenced_out, 15);
    Counters::add(c.locks_lost, 16);
    Counters::add(c.hung_creations, 17);
    Counters::add(c.wait_timeouts, 18);
    Counters::add(c.removals, 19);
    const auto s = c.snapshot();
    const std::uint64_t got[] = {s.hits,
                                 s.misses,
                                 s.stale_served,
                                 s.waited,
                                 s.created,
                                 s.creation_errors,
                                 s.lock_waits,
                                 s.degraded,
                                 s.backend_errors,
                                 s.decode_errors,
                                 s.lock_errors,
                                 s.early_recomputes,
                                 s.background_refreshes,
                                 s.invalidation_checks,
                                 s.fenced_out,
                                 s.locks_lost,
                                 s.hung_creations,
                                 s.wait_timeouts,
                                 s.removals};
    for (std::uint64_t i = 0; i < std::size(got); ++i) CHECK(got[i] == i + 1);
  }
}
