// SPDX-License-Identifier: MIT
// A server that answers garbage, streams, drips, stalls, truncates, resets,
// or answers another request (SPEC I7), against both transports: every
// request ends by its deadline (+50 ms), memory stays bounded by the largest
// item a server can hold, and no caller gets a wrong value. The server is
// integration/hostile_server.cpp, a deliberately broken memcached.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>

#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "dogpile/region.hpp"
#include "hostile_server.hpp"
#include "memcached_server.hpp"
#include "message_faults.hpp"
#include "quiet.hpp"
#include "slack.hpp"

using namespace std::chrono_literals;
using dogpile::test::HostileServer;
using dogpile::test::kSchedulingSlackMs;
using dogpile::test::message_faults;
using dogpile::test::now_ms;
using Reply = HostileServer::Reply;

namespace {

std::shared_ptr<dogpile::Backend> backend(bool meta, const std::string& options) {
  if (meta) return std::make_shared<dogpile::MemcachedMetaBackend>(options);
  return std::make_shared<dogpile::MemcachedBackend>(options);
}

constexpr Reply kHostile[] = {Reply::stream,          Reply::stream_endless, Reply::drip,
                              Reply::stall_mid_value, Reply::truncated,      Reply::reset,
                              Reply::out_of_order,    Reply::extra_replies,  Reply::garbage};

}  // namespace

TEST_SUITE("hostile server") {
  TEST_CASE(
      "a backend's request ends by the poll timeout (+50 ms), memory bounded, nothing wrong") {
    for (const bool meta : {false, true}) {
      for (const Reply how : kHostile) {
        CAPTURE(meta);
        CAPTURE(HostileServer::name(how));
        HostileServer server(how);
        auto b = backend(meta, server.options() + " --POLL-TIMEOUT=500");
        dogpile::test::reset_peak_rss();
        const long before = dogpile::test::peak_rss_kb();
        const double start = now_ms();
        bool failed = false;
        std::string code;
        try {
          const auto item = b->get("k");
          CHECK_FALSE(item.has_value());  // never the server's bytes as a value
        } catch (const dogpile::BackendError& e) {
          failed = true;
          code = e.code();
          CHECK_MESSAGE(message_faults(e.what(), e.server()).empty(), e.what());
        }
        const double took = now_ms() - start;
        const long grew = dogpile::test::peak_rss_kb() - before;
        std::printf(
            "hostile server, %s transport, server %-28s %7.1f ms, %s, peak +%ld kB, "
            "%zu bytes sent to it\n",
            meta ? "meta" : "classic", HostileServer::name(how), took,
            failed ? code.c_str() : "no error", grew, server.bytes_sent());
        CHECK(failed);
        CHECK(took <= 550 + kSchedulingSlackMs);
        CHECK(grew < 16 * 1024);  // the largest item is 1 MiB
        CHECK(server.reads() >= 1);
      }
    }
  }

  // The stop token travels with the request (dogpile::Request), not beside
  // it: a request stalled on a server ends when its caller stops it.
  TEST_CASE("a request stalled mid-value ends within 50 ms of its stop, not at the poll timeout") {
    for (const bool meta : {false, true}) {
      CAPTURE(meta);
      HostileServer server(Reply::stall_mid_value);
      auto b = backend(meta, server.options() + " --POLL-TIMEOUT=5000");
      std::stop_source stop;
      std::atomic<double> stopped_at{0};
      const double start = now_ms();
      std::thread stopper([&] {
        std::this_thread::sleep_for(100ms);
        stopped_at = now_ms();
        stop.request_stop();
      });
      std::string code;
      try {
        (void)b->get("k", dogpile::Request{.stop = stop.get_token()});
      } catch (const dogpile::BackendError& e) {
        code = e.code();
      }
      const double ended = now_ms();
      stopper.join();
      std::printf("stalled request, %s transport: ended %.1f ms after its stop (%.1f ms in all)\n",
                  meta ? "meta" : "classic", ended - stopped_at, ended - start);
      CHECK(code == "TIMEOUT");
      CHECK(ended >= stopped_at);  // not before its stop: the server never answered
      CHECK(ended - stopped_at <= 50 + kSchedulingSlackMs);
      // Stopped by its caller: no fault of the server, which is not marked
      // down (the next request is sent to it, and times out on its own).
      std::string next;
      try {
        (void)b->get("k", dogpile::Request{.deadline = std::chrono::steady_clock::now() + 50ms});
      } catch (const dogpile::BackendError& e) {
        next = e.code();
      }
      CHECK(next == "TIMEOUT");
    }
  }

  TEST_CASE("a region call ends by its deadline (+50 ms) with the creator's value") {
    for (const bool meta : {false, true}) {
      for (const Reply how : kHostile) {
        CAPTURE(meta);
        CAPTURE(HostileServer::name(how));
        HostileServer server(how);
        // Requests that wait out the poll timeout (2 s) would outlast the
        // deadline: the deadline must end them.
        dogpile::CacheRegion region(backend(meta, server.options() + " --POLL-TIMEOUT=2000"),
                                    dogpile::test::quiet({.expiration = 60s,
                                                          .deadline = 300ms,
                                                          .clock_sync = std::nullopt,
                                                          .invalidation_check = std::nullopt}));
        dogpile::test::reset_peak_rss();
        const long before = dogpile::test::peak_rss_kb();
        double slowest = 0;
        int wrong = 0;
        for (int i = 0; i < 3; ++i) {
          const double start = now_ms();
          const std::string v =
              region.get_or_create("k", [] { return std::string("the creator's"); });
          slowest = std::max(slowest, now_ms() - start);
          if (v != "the creator's") ++wrong;
        }
        const long grew = dogpile::test::peak_rss_kb() - before;
        std::printf(
            "hostile server, %s transport, region, server %-28s slowest of 3 calls "
            "%6.1f ms (deadline 300 ms), %d wrong, peak +%ld kB\n",
            meta ? "meta" : "classic", HostileServer::name(how), slowest, wrong, grew);
        CHECK(wrong == 0);
        CHECK(slowest <= 350 + kSchedulingSlackMs);
        CHECK(grew < 16 * 1024);
        CHECK(region.stats().backend_errors >= 1);
      }
    }
  }

  TEST_CASE("a clock out of range is refused, not taken") {
    for (const bool meta : {false, true}) {
      CAPTURE(meta);
      for (const char* said : {"9223372036854775", "-5", "12abc", "99999999999999999999999"}) {
        CAPTURE(said);
        HostileServer server(Reply::honest, said);
        auto b = backend(meta, server.options());
        try {
          (void)b->server_time("k", {});
          FAIL("a clock of " << said << " was taken");
        } catch (const dogpile::BackendError& e) {
          CHECK(e.code() == "PROTOCOL_ERROR");
        }
      }
      HostileServer honest(Reply::honest);
      const auto t = backend(meta, honest.options())->server_time("k", {});
      REQUIRE(t);
      CHECK(std::chrono::abs(t->time - dogpile::system_clock().now()) < 3s);
    }
  }

  TEST_CASE("a host that is not a name or an address is refused, naming the option") {
    for (const bool meta : {false, true}) {
      CAPTURE(meta);
      for (const char* options : {"--SERVER=127.0.0.1;27668", "--SERVER=127.0.0.1:",
                                  "--SERVER=a,b:1", "--SERVER=exa$mple.com:11211"}) {
        CAPTURE(options);
        try {
          (void)backend(meta, options);
          FAIL("accepted");
        } catch (const std::invalid_argument& e) {
          CAPTURE(e.what());
          const std::string what = e.what();
          // libmemcached may refuse it first, in its own words; either way
          // the option is named.
          const std::string option = std::string(options).substr(0, std::string(options).find(':'));
          CHECK((what.find(options) != std::string::npos ||
                 what.find(option.substr(0, option.find(';'))) != std::string::npos));
        }
      }
    }
  }

  TEST_CASE("an unreachable server: the first error names the server and the cause") {
    for (const bool meta : {false, true}) {
      CAPTURE(meta);
      const int port = dogpile::test::free_port();  // nothing listens there
      auto b = backend(meta, "--SERVER=127.0.0.1:" + std::to_string(port));
      const std::string where = "127.0.0.1:" + std::to_string(port);
      try {
        (void)b->get("k");
        FAIL("no error");
      } catch (const dogpile::BackendError& e) {
        CAPTURE(e.what());
        // The first words say it all.
        CHECK(std::string(e.what()).rfind(
                  "cannot reach memcached at " + where + " (connection refused)", 0) == 0);
        CHECK(e.server() == where);
        CHECK(e.code() == "CONNECTION_FAILURE");
        CHECK_MESSAGE(message_faults(e.what(), where).empty(), e.what());
      }
      try {  // then marked down, saying why
        (void)b->get("k");
        FAIL("no error");
      } catch (const dogpile::BackendError& e) {
        CAPTURE(e.what());
        CHECK(e.code() == "SERVER_MARKED_DOWN");
        CHECK(std::string(e.what()).rfind(
                  "cannot reach memcached at " + where + " (connection refused); marked down", 0) ==
              0);
        CHECK_MESSAGE(message_faults(e.what(), where).empty(), e.what());
      }
    }
  }

  TEST_CASE("a key that is no memcached key reaches no server, from any member") {
    const std::string injecting = "x 2 T0\r\nAB\r\nmd victim\r\nms y";
    for (const bool meta : {false, true}) {
      for (const std::string& key :
           {injecting, std::string("a b"), std::string("a\0b", 3), std::string(251, 'k'),
            std::string(""), std::string("caf\xc3\xa9")}) {
        CAPTURE(meta);
        CAPTURE(key);
        HostileServer server(Reply::honest);
        auto b = backend(meta, server.options());
        const dogpile::Item item{"v", 0};
        const std::string_view keys[] = {"fine", key};
        const dogpile::KeyedItem items[] = {{"fine", &item}, {key, &item}};
        dogpile::Lease leases[2];
        auto slots = [&] {
          return std::vector<dogpile::KeyRead>{{.key = "fine", .lease = &leases[0]},
                                               {.key = key, .lease = &leases[1]}};
        };
        dogpile::Cas cas = 0;
        int refused = 0;
        auto expect = [&](const char* what, auto call) {
          CAPTURE(what);
          try {
            call();
            FAIL("accepted");
          } catch (const dogpile::BackendError& e) {
            CHECK(e.code() == "INVALID_KEY");
            ++refused;
          }
        };
        expect("get", [&] { (void)b->get(key); });
        expect("get_view", [&] { b->get_view(key, [](std::string_view, std::uint32_t) {}); });
        expect("set", [&] { b->set(key, item, 10s); });
        expect("add", [&] { (void)b->add(key, item, 10s); });
        expect("remove", [&] { b->remove(key); });
        expect("gets", [&] { (void)b->gets(key, cas); });
        expect("cas", [&] { (void)b->cas(key, item, 10s, 1); });
        expect("get_multi", [&] { (void)b->get_multi(keys); });
        expect("set_multi", [&] { b->set_multi(items, 10s); });
        expect("remove_multi", [&] { b->remove_multi(keys); });
        expect("make_lock", [&] { (void)b->make_lock(key, 10s); });
        expect("server_time", [&] { (void)b->server_time(key, {}); });
        expect("read", [&] {
          auto s = slots();
          b->read(s, dogpile::LeaseRequest{}, {});
        });
        expect("claim", [&] {
          auto s = slots();
          b->claim(s, dogpile::LeaseRequest{}, {});
        });
        expect("confirm", [&] {
          auto s = slots();
          b->confirm(s, {});
        });
        expect("poll", [&] {
          auto s = slots();
          b->poll(s, dogpile::LeaseRequest{}, {});
        });
        expect("write", [&] {
          std::vector<dogpile::KeyWrite> w{{.key = "fine", .item = &item, .lease = &leases[0]},
                                           {.key = key, .item = &item, .lease = &leases[1]}};
          b->write(w, {});
        });
        expect("erase", [&] {
          std::vector<dogpile::KeyErase> e{{.key = "fine"}, {.key = key}};
          b->erase(e, {});
        });
        if (meta) expect("mark_stale", [&] { (void)b->mark_stale(key, 10s, {}); });
        CHECK(refused == 18 + (meta ? 1 : 0));  // every member that takes a key
        CHECK(server.requests() == 0);          // nothing reached the server, not even "fine"
      }
    }
  }

  TEST_CASE("an honest reply through the same server is read (the setup is sound)") {
    for (const bool meta : {false, true}) {
      CAPTURE(meta);
      HostileServer server(Reply::honest);
      auto b = backend(meta, server.options());
      CHECK_FALSE(b->get("k").has_value());
      CHECK(server.reads() == 1);
      b->set("k", dogpile::Item{"v", 0}, 10s);
      CHECK_FALSE(b->get("k").has_value());  // it stores nothing
    }
  }
}
