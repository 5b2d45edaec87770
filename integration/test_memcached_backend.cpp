// SPDX-License-Identifier: MIT
// MemcachedBackend against a real memcached: the conformance suite, and what
// is particular to memcached.
#include <doctest/doctest.h>

#include <thread>

#include "dogpile/clock.hpp"

#include "../tests/backend_conformance.hpp"
#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "memcached_server.hpp"
#include "message_faults.hpp"

using namespace std::chrono_literals;
using dogpile::Item;
using dogpile::MemcachedBackend;
using dogpile::test::MemcachedServer;

namespace {

struct MemcachedFixture {
  static constexpr bool kVersions = true;
  static constexpr bool kServerLeases = false;
  MemcachedServer server;
  std::shared_ptr<dogpile::Backend> backend = std::make_shared<MemcachedBackend>(server.options());
  std::shared_ptr<dogpile::Backend> other() {
    return std::make_shared<MemcachedBackend>(server.options());
  }
  void advance(dogpile::Duration d) { std::this_thread::sleep_for(d); }
};

}  // namespace

TEST_CASE_TEMPLATE_INVOKE(backend_conformance, MemcachedFixture);

TEST_SUITE("memcached backend") {
  TEST_CASE_TEMPLATE(
      "a lock whose release failed (the server stalled) is released when tried again", Transport,
      MemcachedBackend, dogpile::MemcachedMetaBackend) {
    MemcachedServer server;
    auto backend = std::make_shared<Transport>(server.options() + " --POLL-TIMEOUT=200");
    auto lock = backend->make_lock("stalled", 30s);
    REQUIRE(lock->try_lock());
    server.pause();
    CHECK_THROWS_AS(lock->release(), dogpile::BackendError);
    CHECK(lock->held());  // still held: it may be tried again
    server.resume();
    bool done = false;
    for (int attempt = 0; attempt < 50 && !done; ++attempt) {
      try {
        lock->release();  // true, or false if the stalled request landed after all
        done = true;
      } catch (const dogpile::BackendError&) {
        std::this_thread::sleep_for(100ms);  // the server may be marked down for a while
      }
    }
    CHECK(done);
    CHECK_FALSE(lock->held());
    CHECK(server.raw("get stalled#L\r\n") == "END\r\n");
  }

  TEST_CASE("options that dogpile cannot work with are refused at construction") {
    auto refused = [](std::string_view options, std::string_view mention) {
      try {
        MemcachedBackend backend(options);
        FAIL("accepted: " << options);
      } catch (const std::invalid_argument& e) {
        CHECK_MESSAGE(std::string_view(e.what()).find(mention) != std::string_view::npos, e.what());
      }
    };
    refused("--SERVER=127.0.0.1:1 --BINARY-PROTOCOL", "--BINARY-PROTOCOL");
    refused("--SERVER=127.0.0.1:1 --NOREPLY", "--NOREPLY");
    refused("--SERVER=127.0.0.1:1 --USE-UDP", "--USE-UDP");
    refused("--SERVER=127.0.0.1:1 --BUFFER-REQUESTS", "--BUFFER-REQUESTS");
    refused("--SERVER=127.0.0.1:1 --NAMESPACE=x", "--NAMESPACE");
    refused("--POOL-MAX=4", "no server");
    // A typo is named, not only libmemcached's "unexpected UNKNOWN_OPTION".
    refused("--SERVER=127.0.0.1:1 --NO-SUCH-OPTION", "option \"--NO-SUCH-OPTION\"");
    refused("--SERVER=127.0.0.1:1 --POLL-TIMOUT=200 --TCP-NODELAY", "option \"--POLL-TIMOUT=200\"");
    // No pointer, no source path of libmemcached's, no default options repeated.
    try {
      MemcachedBackend backend("--SERVER=127.0.0.1:1 --CONNECT-TIMEOUT=abc");
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string_view(e.what()) ==
            "dogpile::MemcachedBackend: option \"--CONNECT-TIMEOUT=abc\" is not one libmemcached "
            "knows, or its value is wrong (syntax error, unexpected STRING, expecting NUMBER)");
      CHECK_MESSAGE(dogpile::test::message_faults(e.what()).empty(), e.what());
    }
  }

  TEST_CASE("white space around the options is not an error") {
    MemcachedServer server;
    MemcachedBackend backend("  " + server.options() + " \n");
    backend.set("k", Item{"v", 0}, 0s);
    CHECK(backend.get("k") == Item{"v", 0});
    CHECK_THROWS_WITH_AS(MemcachedBackend("   "), doctest::Contains("no server"),
                         std::invalid_argument);
  }

  TEST_CASE("the caller's options follow dogpile's defaults, so they win") {
    MemcachedBackend backend("--SERVER=127.0.0.1:1 --POLL-TIMEOUT=250");
    const std::string& o = backend.options();
    CHECK(o.find("--SUPPORT-CAS") != std::string::npos);
    CHECK(o.rfind("--POLL-TIMEOUT=250") > o.find("--POLL-TIMEOUT=1000"));
  }

  TEST_CASE("a server that is down is a BackendError, not a crash or a hang") {
    MemcachedServer server;
    MemcachedBackend backend(server.options() + " --CONNECT-TIMEOUT=200 --POLL-TIMEOUT=200");
    server.kill();
    CHECK_THROWS_AS((void)backend.get("k"), dogpile::BackendError);
    CHECK_THROWS_AS(backend.set("k", Item{"v", 0}, 0s), dogpile::BackendError);
    CHECK_THROWS_AS((void)backend.add("k", Item{"v", 0}, 0s), dogpile::BackendError);
    auto lock = backend.make_lock("k", 30s);
    CHECK_THROWS_AS((void)lock->try_lock(), dogpile::BackendError);
  }

  TEST_CASE("a key that is not a valid memcached key is refused, never sent") {
    MemcachedServer server;
    MemcachedBackend backend(server.options());
    server.raw_set("canary", "alive", 0);
    for (std::string_view bad : {"two words", "x\r\nflush_all", "tab\tkey"}) {
      CHECK_THROWS_AS((void)backend.get(bad), dogpile::BackendError);
      CHECK_THROWS_AS(backend.set(bad, Item{"v", 0}, 0s), dogpile::BackendError);
    }
    CHECK_THROWS_AS((void)backend.get(std::string(251, 'k')), dogpile::BackendError);
    CHECK(server.stats().at("cmd_flush") == 0);
    CHECK(backend.get("canary") == Item{"alive", 0});
  }

  TEST_CASE("an item over the server's size limit is a BackendError naming the cause") {
    MemcachedServer server;
    MemcachedBackend backend(server.options());
    try {
      backend.set("big", Item{std::string(2 << 20, 'x'), 0}, 0s);
      FAIL("a 2 MiB item was accepted");
    } catch (const dogpile::BackendError& e) {
      CHECK_MESSAGE(e.code() == "ITEM_TOO_BIG", e.what());
      CHECK_MESSAGE(
          std::string_view(e.what()).find("over the item size limit") != std::string_view::npos,
          e.what());
    }
    CHECK_FALSE(backend.get("big").has_value());
  }

  TEST_CASE("time to live over 30 days is sent as an absolute time and still works") {
    MemcachedServer server;
    MemcachedBackend backend(server.options());
    backend.set("long", Item{"v", 0}, std::chrono::hours(24 * 90));
    CHECK(backend.get("long") == Item{"v", 0});  // read as relative, it would be in 1970: gone
  }

  TEST_CASE("the lock item sits on the value's server under the lock key") {
    MemcachedServer server;
    MemcachedBackend backend(server.options());
    dogpile::MemcachedLock lock(backend, "report:2026", 30s);
    CHECK(lock.lock_key() == "report:2026#L");
    REQUIRE(lock.try_lock());
    const std::string reply = server.raw("get report:2026#L\r\n");
    // flags 0x64704C01 (1685081089), 56 bytes: the lock item format.
    CHECK(reply.starts_with("VALUE report:2026#L 1685081089 56\r\ndgpL"));
    CHECK(lock.release());
    CHECK(server.raw("get report:2026#L\r\n") == "END\r\n");
  }
}
