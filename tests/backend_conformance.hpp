// SPDX-License-Identifier: MIT
// The backend conformance suite: what every dogpile::Backend must do, written
// once and instantiated per backend (MemoryBackend in tests/, MemcachedBackend
// in integration/) with TEST_CASE_TEMPLATE_INVOKE.
//
// A fixture F provides:
//   std::shared_ptr<dogpile::Backend> backend;     // the backend under test
//   std::shared_ptr<dogpile::Backend> other();     // a second client of the same store
//   void advance(dogpile::Duration d);             // let d pass (a manual clock, or real time)
//   static constexpr bool kVersions;               // gets() reports versions (cas works)
//   static constexpr bool kServerLeases;           // the store grants leases itself (memcached
//                                                  // meta: a placeholder holds a missing key)
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/backend.hpp"
#include "format/lock_item.hpp"

namespace dogpile::test {

/// One key's lease and the KeyRead that refers to it (not movable: the
/// read points at the lease).
struct LeaseKey {
  dogpile::Lease lease;
  dogpile::KeyRead read;
  explicit LeaseKey(std::string_view key) : read{.key = key, .lease = &lease} {}
  LeaseKey(const LeaseKey&) = delete;
  LeaseKey& operator=(const LeaseKey&) = delete;
  /// Reads as the engine's hot path does; the item, if any.
  std::optional<Item> read_view(Backend& b, const LeaseRequest& r) {
    std::optional<Item> item;
    auto visit = [&](std::size_t, std::string_view data, std::uint32_t flags) {
      item = Item{std::string(data), flags};
    };
    const Backend::Visit visitor(visit);
    b.read({&read, 1}, r, {}, &visitor);
    return item;
  }
  void claim(Backend& b, const LeaseRequest& r) { b.claim({&read, 1}, r, {}); }
  void confirm(Backend& b) { b.confirm({&read, 1}, {}); }
  void poll(Backend& b, const LeaseRequest& r) { b.poll({&read, 1}, r, {}); }
  /// Stores `item` under the lease's fence; whether it was stored.
  bool store(Backend& b, const Item& item, Ttl ttl) {
    KeyWrite w{.key = read.key, .item = &item, .ttl = ttl, .fence = lease.fence, .lease = &lease};
    b.write({&w, 1}, {});
    return w.stored;
  }
  /// Ends the lease; whether it had been lost.
  bool release(Backend& b) {
    LeaseEnd end{.key = read.key, .lease = &lease};
    b.release({&end, 1}, {});
    return end.lost;
  }
};

inline std::string all_byte_values() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  return s;
}

}  // namespace dogpile::test

TEST_CASE_TEMPLATE_DEFINE("backend conformance", F, backend_conformance) {
  using namespace std::chrono_literals;
  using dogpile::Item;
  F f;
  dogpile::Backend& b = *f.backend;

  SUBCASE("get of a missing key is nullopt") { CHECK_FALSE(b.get("conf-missing").has_value()); }

  SUBCASE("set stores bytes and flags; set replaces") {
    b.set("conf-a", Item{"one", 7}, 0s);
    CHECK(b.get("conf-a") == Item{"one", 7});
    b.set("conf-a", Item{"two", 9}, 0s);
    CHECK(b.get("conf-a") == Item{"two", 9});
  }

  SUBCASE("every byte value and the empty value survive") {
    const std::string bytes = dogpile::test::all_byte_values();
    b.set("conf-bytes", Item{bytes, 0xffffffffu}, 0s);
    CHECK(b.get("conf-bytes") == Item{bytes, 0xffffffffu});
    b.set("conf-empty", Item{"", 1}, 0s);
    CHECK(b.get("conf-empty") == Item{"", 1});
  }

  SUBCASE("get_view shows the item's bytes and flags, or says there is none") {
    b.set("conf-view", Item{"viewed", 3}, 0s);
    std::string seen;
    std::uint32_t seen_flags = 0;
    CHECK(b.get_view("conf-view", [&](std::string_view data, std::uint32_t flags) {
      seen = data;
      seen_flags = flags;
    }));
    CHECK(seen == "viewed");
    CHECK(seen_flags == 3);
    CHECK_FALSE(b.get_view("conf-not-there", [&](std::string_view, std::uint32_t) { FAIL(""); }));
  }

  SUBCASE("add stores only when nothing is there") {
    CHECK(b.add("conf-add", Item{"first", 1}, 0s));
    CHECK_FALSE(b.add("conf-add", Item{"second", 2}, 0s));
    CHECK(b.get("conf-add") == Item{"first", 1});
  }

  SUBCASE("remove says whether something was there") {
    b.set("conf-rm", Item{"x", 0}, 0s);
    CHECK(b.remove("conf-rm"));
    CHECK_FALSE(b.get("conf-rm").has_value());
    CHECK_FALSE(b.remove("conf-rm"));
  }

  SUBCASE("get_multi keeps the order, marks missing keys, repeats duplicates") {
    b.set("conf-m1", Item{"1", 1}, 0s);
    b.set("conf-m3", Item{"3", 3}, 0s);
    const std::vector<std::string_view> keys{"conf-m3", "conf-m2", "conf-m1", "conf-m3"};
    const auto items = b.get_multi(keys);
    REQUIRE(items.size() == 4);
    CHECK(items[0] == Item{"3", 3});
    CHECK_FALSE(items[1].has_value());
    CHECK(items[2] == Item{"1", 1});
    CHECK(items[3] == Item{"3", 3});
    CHECK(b.get_multi({}).empty());
  }

  SUBCASE("set_multi and remove_multi") {
    const Item x{"x", 1}, y{"y", 2};
    const std::vector<dogpile::KeyedItem> batch{{"conf-s1", &x}, {"conf-s2", &y}};
    b.set_multi(batch, 0s);
    CHECK(b.get("conf-s1") == x);
    CHECK(b.get("conf-s2") == y);
    const std::vector<std::string_view> keys{"conf-s1", "conf-s2", "conf-s3"};
    b.remove_multi(keys);
    CHECK_FALSE(b.get("conf-s1").has_value());
    CHECK_FALSE(b.get("conf-s2").has_value());
  }

  SUBCASE("items expire after their time to live; ttl 0 never expires") {
    b.set("conf-ttl", Item{"short", 0}, 1s);
    b.set("conf-forever", Item{"long", 0}, 0s);
    CHECK(b.get("conf-ttl").has_value());
    f.advance(2s);
    CHECK_FALSE(b.get("conf-ttl").has_value());
    CHECK(b.get("conf-forever").has_value());
    CHECK(b.add("conf-ttl", Item{"again", 0}, 0s));  // an expired item does not block add
  }

  SUBCASE("a lock is held by one holder at a time, across clients") {
    auto other = f.other();
    auto mine = b.make_lock("conf-lock", 30s);
    auto theirs = other->make_lock("conf-lock", 30s);
    CHECK(mine->try_lock());
    CHECK_FALSE(theirs->try_lock());
    CHECK(mine->release());
    CHECK(theirs->try_lock());
    CHECK_FALSE(mine->try_lock());
    CHECK(theirs->release());
    CHECK_FALSE(theirs->release());  // not held any more
  }

  SUBCASE("a lock and the value it guards do not touch each other") {
    b.set("conf-guarded", Item{"value", 5}, 0s);
    auto lock = b.make_lock("conf-guarded", 30s);
    CHECK(lock->try_lock());
    CHECK(b.get("conf-guarded") == Item{"value", 5});
    CHECK(lock->release());
    CHECK(b.get("conf-guarded") == Item{"value", 5});
    CHECK_FALSE(b.add("conf-guarded", Item{"other", 0}, 0s));
  }

  SUBCASE("locks of different keys are independent") {
    auto a = b.make_lock("conf-la", 30s);
    auto c = b.make_lock("conf-lb", 30s);
    CHECK(a->try_lock());
    CHECK(c->try_lock());
    CHECK(a->release());
    CHECK(c->release());
  }

  SUBCASE("a late release never removes the lock of the next holder") {
    auto other = f.other();
    auto a = b.make_lock("conf-late", 1s);
    auto c = other->make_lock("conf-late", 30s);
    REQUIRE(a->try_lock());
    f.advance(2s);  // a's lock expires
    REQUIRE(c->try_lock());
    CHECK_FALSE(a->release());  // a finds c's token and leaves it
    CHECK_FALSE(a->extend());
    auto d = other->make_lock("conf-late", 30s);
    CHECK_FALSE(d->try_lock());  // c still holds it
    CHECK(c->release());
    CHECK(d->try_lock());
    CHECK(d->release());
  }

  SUBCASE("extend keeps a lock past its original time to live") {
    auto other = f.other();
    // memcached counts expiry in whole seconds and may expire an item up to a
    // second early, so the margins here are a second wide.
    auto a = b.make_lock("conf-extend", 4s);
    REQUIRE(a->try_lock());
    f.advance(2s);
    CHECK(a->extend());
    f.advance(2500ms);  // 4.5 s after taking it: only the extension holds it now
    auto c = other->make_lock("conf-extend", 30s);
    CHECK_FALSE(c->try_lock());
    CHECK(a->release());
    CHECK(c->try_lock());
    CHECK(c->release());
  }

  SUBCASE("Lockable: lock() takes a free lock; unlock() releases it") {
    auto a = b.make_lock("conf-lockable", 30s);
    a->lock();
    auto c = f.other()->make_lock("conf-lockable", 30s);
    CHECK_FALSE(c->try_lock());
    a->unlock();
    CHECK(c->try_lock());
    c->unlock();
  }

  SUBCASE("gets reports a version that every write changes; cas stores only at that version") {
    if constexpr (F::kVersions) {
      dogpile::Cas v1 = 0, v2 = 0, none = 7;
      CHECK_FALSE(b.gets("conf-cas", none).has_value());
      CHECK(none == 0);
      b.set("conf-cas", Item{"one", 1}, 0s);
      REQUIRE(b.gets("conf-cas", v1) == Item{"one", 1});
      CHECK(v1 != 0);
      CHECK(b.cas("conf-cas", Item{"two", 2}, 0s, v1));
      REQUIRE(b.gets("conf-cas", v2) == Item{"two", 2});
      CHECK(v2 != v1);
      CHECK_FALSE(b.cas("conf-cas", Item{"three", 3}, 0s, v1));  // v1 is gone
      f.other()->set("conf-cas", Item{"theirs", 0}, 0s);
      CHECK_FALSE(b.cas("conf-cas", Item{"mine", 0}, 0s, v2));  // written since
      CHECK(b.get("conf-cas") == Item{"theirs", 0});
      b.remove("conf-cas");
      CHECK_FALSE(b.cas("conf-cas", Item{"gone", 0}, 0s, v2));
    }
  }

  SUBCASE("lease: one caller wins the claim, the lock says when it started and what to expect") {
    using dogpile::test::LeaseKey;
    auto other = f.other();
    const dogpile::LockInfo info{dogpile::TimePoint(1'767'225'600s), 2500ms};
    dogpile::LeaseRequest request;
    request.ttl = 30s;
    request.info = info;
    LeaseKey mine("conf-lease"), theirs("conf-lease"), polled("conf-lease");
    mine.claim(b, request);
    REQUIRE(mine.lease.state == dogpile::LeaseState::won);
    REQUIRE(mine.lease.lock != nullptr);
    theirs.claim(*other, request);
    CHECK(theirs.lease.state == dogpile::LeaseState::held);
    CHECK(theirs.lease.lock == nullptr);
    polled.poll(*other, request);
    CHECK(polled.lease.state == dogpile::LeaseState::held);
    CHECK_FALSE(polled.read.item.has_value());
    if constexpr (F::kVersions && !F::kServerLeases) {  // the backends that read the lock item
      CHECK(polled.lease.holder.started_at == info.started_at);
      CHECK(polled.lease.holder.expected == info.expected);
    }
    CHECK_FALSE(mine.release(b));
    theirs.claim(*other, request);
    CHECK(theirs.lease.state == dogpile::LeaseState::won);
    theirs.release(*other);
  }

  SUBCASE("lease: confirm reads under the lease and fences the store; a write since wins") {
    using dogpile::test::LeaseKey;
    auto other = f.other();
    dogpile::LeaseRequest request;
    for (bool written_meanwhile : {false, true}) {
      for (bool was_there : {false, true}) {
        CAPTURE(written_meanwhile);
        CAPTURE(was_there);
        const std::string key =
            std::string("conf-fence-") + (written_meanwhile ? "w" : "n") + (was_there ? "t" : "e");
        if (was_there) b.set(key, Item{"old", 0}, 0s);
        LeaseKey slot(key);
        slot.claim(b, request);
        REQUIRE(slot.lease.state == dogpile::LeaseState::won);
        slot.confirm(b);
        CHECK(slot.read.item.has_value() == was_there);
        if (!was_there) {
          // A missing key is fenced by its absence, or by the version of the
          // placeholder that holds it.
          CHECK(slot.lease.fence.kind ==
                (F::kServerLeases ? dogpile::Fence::Kind::version : dogpile::Fence::Kind::absent));
        }
        if (written_meanwhile) other->set(key, Item{"written meanwhile", 0}, 0s);
        const Item made{"made", 0};
        const bool stored = slot.store(b, made, 0s);
        slot.release(b);
        const bool fenced = written_meanwhile && (!was_there || F::kVersions);
        CHECK(stored == !fenced);
        CHECK(b.get(key) == (fenced ? Item{"written meanwhile", 0} : made));
      }
    }
  }

  SUBCASE("lease: a lease lost to expiry is reported lost at release, and removes nothing") {
    using dogpile::test::LeaseKey;
    auto other = f.other();
    dogpile::LeaseRequest request;
    request.ttl = 1s;
    LeaseKey mine("conf-lost"), theirs("conf-lost");
    mine.claim(b, request);
    REQUIRE(mine.lease.state == dogpile::LeaseState::won);
    f.advance(2s);
    request.ttl = 30s;
    theirs.claim(*other, request);
    REQUIRE(theirs.lease.state == dogpile::LeaseState::won);
    CHECK(mine.release(b));
    LeaseKey polled("conf-lost");
    polled.poll(b, request);
    CHECK(polled.lease.state == dogpile::LeaseState::held);  // theirs is still there
    theirs.release(*other);
  }

  SUBCASE("lease: read and poll return the items of many keys, in order") {
    b.set("conf-r1", Item{"1", 1}, 0s);
    b.set("conf-r3", Item{"3", 3}, 0s);
    dogpile::Lease leases[3];
    dogpile::KeyRead slots[3] = {{.key = "conf-r3", .lease = &leases[0]},
                                 {.key = "conf-r2", .lease = &leases[1]},
                                 {.key = "conf-r1", .lease = &leases[2]}};
    b.read(slots, dogpile::LeaseRequest{}, {});
    CHECK(slots[0].item == Item{"3", 3});
    CHECK_FALSE(slots[1].item.has_value());
    CHECK(slots[2].item == Item{"1", 1});
    b.poll(slots, dogpile::LeaseRequest{}, {});
    CHECK(slots[0].item == Item{"3", 3});
    CHECK_FALSE(slots[1].item.has_value());
    CHECK(leases[1].state != dogpile::LeaseState::held);  // nobody holds conf-r2's lease
  }
}
