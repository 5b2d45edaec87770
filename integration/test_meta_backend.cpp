// SPDX-License-Identifier: MIT
// MemcachedMetaBackend against a real memcached: the conformance suite, the
// server's leases as the engine uses them, health, and refusals.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "../tests/backend_conformance.hpp"
#include "dogpile/memcached_meta.hpp"
#include "memcached_server.hpp"
#include "proxy.hpp"

using namespace std::chrono_literals;
using dogpile::Item;
using dogpile::LeaseRequest;
using dogpile::LeaseState;
using dogpile::MemcachedMetaBackend;
using dogpile::test::LeaseKey;
using dogpile::test::MemcachedServer;

namespace {

struct MetaFixture {
  static constexpr bool kVersions = true;
  static constexpr bool kServerLeases = true;
  MemcachedServer server;
  std::shared_ptr<dogpile::Backend> backend =
      std::make_shared<MemcachedMetaBackend>(server.options());
  std::shared_ptr<dogpile::Backend> other() {
    return std::make_shared<MemcachedMetaBackend>(server.options());
  }
  void advance(dogpile::Duration d) { std::this_thread::sleep_for(d); }
};

// The engine's read of a key: a lease on a miss, and on a value whose time
// to live fell below `grace`.
LeaseRequest engine_read(std::chrono::seconds grace = 10s) {
  LeaseRequest r;
  r.claim_if_missing = true;
  r.claim_if_ttl_below = grace;
  r.ttl = 30s;
  return r;
}

// Reads one key as the engine does; returns the item (if any).
std::optional<Item> read(dogpile::Backend& b, LeaseKey& slot, const LeaseRequest& request) {
  return slot.read_view(b, request);
}

// A server that answers every line with `answer` (an old memcached's ERROR
// to a meta command, or anything else), on a loopback port of its own.
class AnsweringServer {
 public:
  explicit AnsweringServer(std::string answer) : answer_(std::move(answer)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t length = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
    REQUIRE(::listen(listener_, 16) == 0);
    thread_ = std::thread([this] {
      for (;;) {
        const int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0 || stopping_) {
          if (fd >= 0) ::close(fd);
          return;
        }
        char buffer[4096];
        while (::recv(fd, buffer, sizeof buffer, 0) > 0) {
          (void)::send(fd, answer_.data(), answer_.size(), MSG_NOSIGNAL);
        }
        ::close(fd);
      }
    });
  }
  ~AnsweringServer() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
  }
  [[nodiscard]] std::string options() const {
    return "--SERVER=127.0.0.1:" + std::to_string(port_);
  }

 private:
  std::string answer_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE_TEMPLATE_INVOKE(backend_conformance, MetaFixture);

TEST_SUITE("memcached meta backend") {
  TEST_CASE("options: the classic transport's string works, what cannot be honoured is named") {
    auto refused = [](std::string_view options, std::string_view mention) {
      try {
        MemcachedMetaBackend backend(options);
        FAIL("accepted: " << options);
      } catch (const std::invalid_argument& e) {
        CHECK_MESSAGE(std::string_view(e.what()).find(mention) != std::string_view::npos, e.what());
      }
    };
    refused("--SERVER=127.0.0.1:1 --BINARY-PROTOCOL", "--BINARY-PROTOCOL");
    refused("--SERVER=127.0.0.1:1 --NOREPLY", "--NOREPLY");
    refused("--SERVER=127.0.0.1:1 --NAMESPACE=x", "--NAMESPACE");
    refused("--SERVER=127.0.0.1:1 --DISTRIBUTION=modula", "--DISTRIBUTION=modula");
    refused("--SERVER=127.0.0.1:1 --HASH=CRC", "--HASH=CRC");
    refused("--SERVER=127.0.0.1:x", "--SERVER=127.0.0.1:x");
    refused("--SERVER=127.0.0.1:1/?0", "weight");
    refused("--POOL-MAX=4", "no --SERVER");
    // The defaults MemcachedBackend puts first, and weights in both spellings.
    MemcachedMetaBackend(
        "--SUPPORT-CAS --VERIFY-KEY --TCP-NODELAY --CONNECT-TIMEOUT=1000 --POLL-TIMEOUT=1000 "
        "--RETRY-TIMEOUT=2 --POOL-MIN=1 --POOL-MAX=64 --SERVER=10.0.0.1:11211/?2 "
        "--SERVER=10.0.0.2:11211:3 --SERVER=[::1]:11211 --DISTRIBUTION=consistent");
  }

  TEST_CASE("lease in the read: a miss is won by one caller, the others are told it is held") {
    MetaFixture f;
    auto other = f.other();
    LeaseKey mine("lease-miss"), theirs("lease-miss");
    CHECK_FALSE(read(*f.backend, mine, engine_read()).has_value());
    REQUIRE(mine.lease.state == LeaseState::won);
    CHECK(mine.lease.lock != nullptr);
    CHECK(mine.lease.fence.kind == dogpile::Fence::Kind::version);
    CHECK_FALSE(read(*other, theirs, engine_read()).has_value());
    CHECK(theirs.lease.state == LeaseState::held);
    CHECK(theirs.lease.lock == nullptr);
    // The winner stores over its placeholder, fenced by its CAS.
    const Item made{"made", 7};
    CHECK(mine.store(*f.backend, made, 60s));
    CHECK_FALSE(mine.release(*f.backend));
    LeaseKey third("lease-miss");
    CHECK(read(*other, third, engine_read()) == made);
    CHECK(third.lease.state == LeaseState::free);
  }

  TEST_CASE("a winner that gives up gives its lease back at once") {
    MetaFixture f;
    auto other = f.other();
    LeaseKey mine("lease-given-back"), theirs("lease-given-back");
    (void)read(*f.backend, mine, engine_read());
    REQUIRE(mine.lease.state == LeaseState::won);
    CHECK_FALSE(mine.release(*f.backend));  // the creator threw
    (void)read(*other, theirs, engine_read());
    CHECK(theirs.lease.state == LeaseState::won);  // no wait for the lease's time to live
  }

  TEST_CASE("a value whose time runs low: one refresher, the others keep reading it") {
    MetaFixture f;
    auto other = f.other();
    f.backend->set("lease-low", Item{"old", 1}, 5s);  // 5 s left: below the 10 s grace
    LeaseKey mine("lease-low"), theirs("lease-low");
    CHECK(read(*f.backend, mine, engine_read()) == Item{"old", 1});
    REQUIRE(mine.lease.state == LeaseState::won);
    CHECK(read(*other, theirs, engine_read()) == Item{"old", 1});
    CHECK(theirs.lease.state == LeaseState::held);
    // Given back unused (an empty append): the next reader may refresh, and
    // the value is untouched.
    mine.release(*f.backend);
    LeaseKey again("lease-low");
    CHECK(read(*other, again, engine_read()) == Item{"old", 1});
    CHECK(again.lease.state == LeaseState::won);
    CHECK_FALSE(again.read.marked_stale);
  }

  TEST_CASE("per-key soft invalidation: md I, then one refresher and the value marked stale") {
    MetaFixture f;
    auto other = f.other();
    f.backend->set("marked", Item{"v1", 1}, 600s);
    CHECK(f.backend->mark_stale("marked", 60s, {}) == true);
    CHECK(f.backend->mark_stale("never-there", 60s, {}) == false);
    LeaseKey mine("marked"), theirs("marked");
    CHECK(read(*f.backend, mine, engine_read()) == Item{"v1", 1});
    CHECK(mine.read.marked_stale);
    REQUIRE(mine.lease.state == LeaseState::won);
    CHECK(read(*other, theirs, engine_read()) == Item{"v1", 1});
    CHECK(theirs.read.marked_stale);
    CHECK(theirs.lease.state == LeaseState::held);
    const Item made{"v2", 1};
    CHECK(mine.store(*f.backend, made, 600s));
    mine.release(*f.backend);
    LeaseKey after("marked");
    CHECK(read(*other, after, engine_read()) == made);
    CHECK_FALSE(after.read.marked_stale);
    CHECK(after.lease.state == LeaseState::free);
  }

  TEST_CASE("a plain get of a value marked stale does not keep the refresh to itself") {
    MetaFixture f;
    f.backend->set("marked-get", Item{"v", 1}, 600s);
    REQUIRE(f.backend->mark_stale("marked-get", 60s, {}) == true);
    CHECK(f.backend->get("marked-get") == Item{"v", 1});  // memcached hands it the lease...
    LeaseKey reader("marked-get");
    CHECK(read(*f.other(), reader, engine_read()) == Item{"v", 1});
    CHECK(reader.lease.state == LeaseState::won);  // ...which it gave back
    CHECK(reader.read.marked_stale);
  }

  TEST_CASE("extending a lease keeps its CAS: the fence still holds after a slow creation") {
    MetaFixture f;
    auto other = f.other();
    LeaseKey mine("slow");
    LeaseRequest request = engine_read();
    request.ttl = 2s;
    (void)read(*f.backend, mine, request);
    REQUIRE(mine.lease.state == LeaseState::won);
    for (int i = 0; i < 3; ++i) {  // 3 s in all: past the first 2 s time to live
      std::this_thread::sleep_for(1s);
      CHECK(mine.lease.lock->extend());
    }
    LeaseKey theirs("slow");
    (void)read(*other, theirs, request);
    CHECK(theirs.lease.state == LeaseState::held);  // still the one placeholder
    const Item made{"made", 1};
    CHECK(mine.store(*f.backend, made, 60s));
    // Once someone else wrote, the lease cannot be extended.
    LeaseKey next("slow-2");
    (void)read(*f.backend, next, request);
    REQUIRE(next.lease.state == LeaseState::won);
    other->set("slow-2", Item{"theirs", 1}, 60s);
    CHECK_FALSE(next.lease.lock->extend());
  }

  TEST_CASE("claim: a value that never expires is guarded by the lock item") {
    MetaFixture f;
    auto other = f.other();
    f.backend->set("forever", Item{"v", 1}, 0s);
    LeaseRequest request = engine_read();
    LeaseKey mine("forever"), theirs("forever");
    mine.claim(*f.backend, request);
    REQUIRE(mine.lease.state == LeaseState::won);
    CHECK_FALSE(mine.lease.read_with);  // the lock item says nothing of the value
    theirs.claim(*other, request);
    CHECK(theirs.lease.state == LeaseState::held);
    CHECK_FALSE(mine.release(*f.backend));
  }

  TEST_CASE("many keys: one pipeline per server, misses unanswered") {
    MemcachedServer server;
    dogpile::test::Proxy proxy(server.port());
    MemcachedMetaBackend backend(proxy.options());
    backend.set("m1", Item{"1", 1}, 0s);
    backend.set("m3", Item{"3", 3}, 0s);
    proxy.reset_counts();
    const std::string_view keys[] = {"m1", "m2", "m3", "m1"};
    const auto items = backend.get_multi(keys);
    CHECK(items[0] == Item{"1", 1});
    CHECK_FALSE(items[1].has_value());
    CHECK(items[2] == Item{"3", 3});
    CHECK(items[3] == Item{"1", 1});
    CHECK(proxy.counts()["mg"] == 4);
    CHECK(proxy.counts()["mn"] == 1);
  }

  TEST_CASE("a server that does not speak meta is refused, naming it and the other transport") {
    AnsweringServer old("ERROR\r\n");
    MemcachedMetaBackend backend(old.options());
    for (int i = 0; i < 2; ++i) {
      try {
        (void)backend.get("k");
        FAIL("a server answering ERROR to mn was used");
      } catch (const dogpile::BackendError& e) {
        const std::string_view what = e.what();
        CHECK_MESSAGE(what.find("meta protocol") != std::string_view::npos, what);
        CHECK_MESSAGE(what.find("MemcachedBackend") != std::string_view::npos, what);
        CHECK_MESSAGE(what.find("127.0.0.1:") != std::string_view::npos, what);
      }
    }
  }

  TEST_CASE("a server that answers garbage is an error, and the connection is not reused") {
    AnsweringServer garbage("MN\r\nHELLO THERE\r\n");
    MemcachedMetaBackend backend(garbage.options());
    CHECK_THROWS_AS((void)backend.get("k"), dogpile::BackendError);
  }

  TEST_CASE("a killed server fails fast while marked down, and serves again after a restart") {
    MemcachedServer server;
    MemcachedMetaBackend backend(server.options() + " --RETRY-TIMEOUT=1 --POLL-TIMEOUT=300");
    backend.set("k", Item{"v", 1}, 0s);
    server.kill();
    CHECK_THROWS_AS((void)backend.get("k"), dogpile::BackendError);
    try {  // skipped, not tried again
      (void)backend.get("k");
      FAIL("a dead server answered");
    } catch (const dogpile::BackendError& e) {
      CHECK_MESSAGE(std::string_view(e.what()).find("marked down") != std::string_view::npos,
                    e.what());
    }
    server.restart();
    std::this_thread::sleep_for(1100ms);  // the retry interval
    backend.set("k", Item{"back", 1}, 0s);
    CHECK(backend.get("k") == Item{"back", 1});
  }

  TEST_CASE("a stalled server: each request ends by the poll timeout") {
    MemcachedServer server;
    MemcachedMetaBackend backend(server.options() + " --POLL-TIMEOUT=200");
    backend.set("k", Item{"v", 1}, 0s);
    server.pause();
    const auto before = std::chrono::steady_clock::now();
    CHECK_THROWS_AS((void)backend.get("k"), dogpile::BackendError);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - before);
    server.resume();
    CAPTURE(took.count());
    CHECK(took >= 190ms);
    CHECK(took < 1000ms);  // the poll timeout, and a loaded machine's scheduling
  }

  TEST_CASE("an item over the server's size limit is a BackendError naming the cause") {
    MetaFixture f;
    try {
      f.backend->set("big", Item{std::string(2 << 20, 'x'), 0}, 0s);
      FAIL("a 2 MiB item was accepted");
    } catch (const dogpile::BackendError& e) {
      CHECK_MESSAGE(
          std::string_view(e.what()).find("over the item size limit") != std::string_view::npos,
          e.what());
    }
    CHECK(f.backend->get("k").has_value() == false);
  }

  TEST_CASE("a key that is not a valid memcached key is refused, never sent") {
    MetaFixture f;
    f.server.raw_set("canary", "alive", 0);
    for (std::string_view bad : {"two words", "x\r\nflush_all", "tab\tkey"}) {
      CHECK_THROWS_AS((void)f.backend->get(bad), dogpile::BackendError);
      CHECK_THROWS_AS(f.backend->set(bad, Item{"v", 0}, 0s), dogpile::BackendError);
    }
    CHECK_THROWS_AS((void)f.backend->get(std::string(251, 'k')), dogpile::BackendError);
    CHECK(f.server.stats().at("cmd_flush") == 0);
    CHECK(f.backend->get("canary") == Item{"alive", 0});
  }

  TEST_CASE("a value marked stale lives on only as long as asked (a refresher may die)") {
    MetaFixture f;
    f.backend->set("marked-ttl", Item{"v", 1}, 600s);
    REQUIRE(f.backend->mark_stale("marked-ttl", 5s, {}) == true);
    const std::string reply = f.server.raw("mg marked-ttl t\r\n");
    CAPTURE(reply);
    std::int64_t left = 0;
    REQUIRE(std::sscanf(reply.c_str(), "HD t%lld", reinterpret_cast<long long*>(&left)) == 1);
    CHECK(left <= 5);
    CHECK(left >= 3);
  }

  TEST_CASE("extending: never shortens a value's life, never touches another's item") {
    MetaFixture f;
    auto other = f.other();
    auto left = [&](const char* key) {
      long long t = 0;
      const std::string reply = f.server.raw(std::string("mg ") + key + " t\r\n");
      REQUIRE(std::sscanf(reply.c_str(), "HD t%lld", &t) == 1);
      return t;
    };
    // A value marked stale with 20 minutes left: its refresher's lease (30 s)
    // does not cut that short.
    f.backend->set("long-marked", Item{"v", 1}, 1200s);
    REQUIRE(f.backend->mark_stale("long-marked", 1200s, {}) == true);
    LeaseKey mine("long-marked");
    (void)read(*f.backend, mine, engine_read());
    REQUIRE(mine.lease.state == LeaseState::won);
    CHECK(mine.lease.lock->extend());
    CHECK(left("long-marked") > 1100);
    // A placeholder replaced by another client's value: not extended, and the
    // value keeps its own time to live.
    LeaseKey lease("replaced");
    (void)read(*f.backend, lease, engine_read());
    REQUIRE(lease.lease.state == LeaseState::won);
    other->set("replaced", Item{"theirs", 1}, 900s);
    CHECK_FALSE(lease.lease.lock->extend());
    CHECK(left("replaced") > 800);
  }

  TEST_CASE("claim: a value expiring in more than 30 days is guarded by the lock item") {
    MetaFixture f;
    f.backend->set("far", Item{"v", 1}, std::chrono::hours(24 * 60));
    LeaseKey slot("far"), theirs("far");
    slot.claim(*f.backend, engine_read());
    REQUIRE(slot.lease.state == LeaseState::won);
    theirs.claim(*f.other(), engine_read());
    CHECK(theirs.lease.state == LeaseState::held);
    CHECK_FALSE(slot.release(*f.backend));
  }

  TEST_CASE("running out of the call's deadline does not mark the server down") {
    MemcachedServer server;
    MemcachedMetaBackend backend(server.options() + " --POLL-TIMEOUT=2000");
    backend.set("k", Item{"v", 1}, 0s);
    server.pause();
    const dogpile::Request soon{.deadline = std::chrono::steady_clock::now() + 100ms};
    CHECK_THROWS_AS((void)backend.get("k", soon), dogpile::BackendError);
    server.resume();
    CHECK(backend.get("k") == Item{"v", 1});  // at once: not skipped as down
  }

  TEST_CASE("a restarted server: pooled connections it closed are dropped, not failed on") {
    MemcachedServer server;
    MemcachedMetaBackend backend(server.options() + " --RETRY-TIMEOUT=30");
    backend.set("k", Item{"v", 1}, 0s);
    server.stop();
    server.restart();
    backend.set("k", Item{"again", 1}, 0s);  // not "marked down" for 30 s
    CHECK(backend.get("k") == Item{"again", 1});
    // The clock's `stats` too: its first request after a restart is served,
    // and the server is not marked down by it.
    server.stop();
    server.restart();
    CHECK(backend.server_time("k", {}).has_value());
    CHECK(backend.remove("k") == false);
  }
}
