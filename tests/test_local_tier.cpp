// SPDX-License-Identifier: MIT
// The local tier (RegionOptions::local): hot keys with no request, within its
// time to live and the value's freshness; this process's writes at once,
// others' within the time to live; herd protection unchanged; bounded.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dogpile/region.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::CacheRegion;
using dogpile::Invalidation;
using dogpile::LocalTier;
using dogpile::Outcome;

namespace {

// A value whose decoding runs a hook once: lets a test write the key at the
// instant a reader has read it from the backend, before it fills the tier.
struct Racing {
  std::string text;
  bool operator==(const Racing&) const = default;
};
std::function<void()> racing_hook;

// A value that counts its decodes.
struct Profile {
  std::string name;
  int visits = 0;
  bool operator==(const Profile&) const = default;
};
int profile_decodes = 0;

struct LocalFixture : dogpile::test::RegionFixture {
  /// A region with the local tier: 1 s time to live, expiration 10 s.
  dogpile::RegionOptions local(LocalTier tier = {.ttl = 1s}) {
    auto o = options();
    o.local = tier;
    return o;
  }
  std::uint64_t requests() { return backend->counters().total(); }
};

}  // namespace

template <>
struct dogpile::Codec<Racing> {
  static void encode(const Racing& value, std::string& out) { out.append(value.text); }
  static std::optional<Racing> decode(std::string_view bytes) {
    if (auto hook = std::exchange(racing_hook, nullptr)) hook();
    return Racing{std::string(bytes)};
  }
};

template <>
struct dogpile::Codec<Profile> {
  static void encode(const Profile& value, std::string& out) {
    out.append(std::to_string(value.visits)).append(":").append(value.name);
  }
  static std::optional<Profile> decode(std::string_view bytes) {
    ++profile_decodes;
    const auto colon = bytes.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    return Profile{std::string(bytes.substr(colon + 1)),
                   std::stoi(std::string(bytes.substr(0, colon)))};
  }
};

TEST_SUITE("local tier") {
  TEST_CASE("values read are held decoded: a hit of the same type runs no codec") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local({.ttl = 1h}));
    profile_decodes = 0;
    const Profile made{"ann", 7};
    // Made here: held as its bytes (what the creator returned is not what
    // every codec's decode gives back), decoded at each hit.
    CHECK(region.get_or_create("p", [&] { return made; }) == made);
    for (int i = 0; i < 5; ++i) CHECK(region.get_or_create("p", [&] { return Profile{}; }) == made);
    CHECK(profile_decodes == 5);
    CHECK(region.stats().local_hits == 5);
    profile_decodes = 0;
    // Read from the backend (another region, the same backend): decoded once.
    CacheRegion reader(f.backend, f.local({.ttl = 1h}));
    for (int i = 0; i < 5; ++i) CHECK(reader.get_or_create("p", [&] { return Profile{}; }) == made);
    CHECK(profile_decodes == 1);
    // Asked for as another type: its bytes are decoded, the held value untouched.
    CHECK(reader.get_or_create<std::string>("p", [] { return std::string("x"); }) == "7:ann");
    CHECK(reader.get_or_create("p", [&] { return Profile{}; }) == made);
    CHECK(profile_decodes == 1);
    // This process's write: the held value goes, the next read decodes anew.
    CHECK(reader.set("p", Profile{"bob", 8}));
    CHECK(reader.get_or_create("p", [&] { return Profile{}; }) == Profile{"bob", 8});
    CHECK(reader.get_or_create("p", [&] { return Profile{}; }) == Profile{"bob", 8});
    CHECK(profile_decodes == 2);
    // The decoded copy counts against the tier's bytes (its block, and its
    // encoded size again for what it holds): a plain get holds the envelope alone.
    CacheRegion plain(f.backend, f.local({.ttl = 1h}));
    CHECK(plain.get<Profile>("p") == Profile{"bob", 8});
    const auto stored = f.backend->get(reader.backend_key("p"));
    REQUIRE(stored.has_value());
    const auto block = [](std::size_t bytes) { return (bytes + 8 + 15) / 16 * 16; };
    CHECK(reader.stats().local_bytes - plain.stats().local_bytes ==
          block(16 + sizeof(Profile)) + block(stored->data.size()));
  }

  TEST_CASE("compressed values are held decompressed: a hit undoes no zstd frame") {
    LocalFixture f;
    auto o = f.local({.ttl = 1h});
    o.compression.threshold = 1024;
    CacheRegion region(f.backend, o);
    const std::string big(100'000, 'x');
    CHECK(region.get_or_create("k", f.creator(big)) == big);
    // Stored compressed: the backend holds far fewer bytes than the value.
    const auto stored = f.backend->get(region.backend_key("k"));
    REQUIRE(stored.has_value());
    CHECK(stored->data.size() < 10'000);
    // Held whole: the tier's cost counts the value's 100,000 bytes.
    CHECK(region.stats().local_bytes >= 100'000);
    const auto before = f.requests();
    for (int i = 0; i < 3; ++i) CHECK(region.get_or_create("k", f.creator("other")) == big);
    CHECK(f.requests() == before);
    CHECK(region.stats().local_hits == 3);
  }

  TEST_CASE("off by default: every call asks the backend") {
    LocalFixture f;
    CacheRegion region(f.backend, f.options());
    region.get_or_create("k", f.creator("v"));
    const auto before = f.requests();
    for (int i = 0; i < 10; ++i) region.get_or_create("k", f.creator("x"));
    CHECK(f.requests() - before == 10);
    CHECK(region.stats().local_hits == 0);
    CHECK(region.stats().local_entries == 0);
  }

  TEST_CASE("a hot key is served with no request until the tier's time to live") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local({.ttl = 1s, .revalidate = false}));
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("v"), &outcome) == "v");
    CHECK(outcome == Outcome::created);
    const auto before = f.requests();
    for (int i = 0; i < 100; ++i) {
      CHECK(region.get_or_create("k", f.creator("x"), &outcome) == "v");
      CHECK(outcome == Outcome::fresh);
    }
    CHECK(f.requests() == before);
    CHECK(region.stats().local_hits == 100);
    CHECK(region.stats().hits == 0);
    CHECK(region.stats().local_entries == 1);
    f.clock.advance(999ms);
    CHECK(region.get_or_create("k", f.creator("x")) == "v");
    CHECK(f.requests() == before);
    // Past the tier's time to live: one read, which fills the tier again.
    f.clock.advance(1ms);
    CHECK(region.get_or_create("k", f.creator("x")) == "v");
    CHECK(f.requests() == before + 1);
    CHECK(region.stats().hits == 1);
    CHECK(region.get_or_create("k", f.creator("x")) == "v");
    CHECK(f.requests() == before + 1);
    CHECK(f.creator_calls == 1);
  }

  TEST_CASE("past its time to live, an unchanged item is kept after a version check") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local());
    CHECK(region.get_or_create("k", f.creator("v")) == "v");
    for (int round = 1; round <= 3; ++round) {
      f.clock.advance(1s);
      const auto before = f.backend->counters();
      Outcome outcome{};
      CHECK(region.get_or_create("k", f.creator("x"), &outcome) == "v");
      CHECK(outcome == Outcome::fresh);
      CHECK(f.since(before).total() == 1);  // the version alone was asked
      CHECK(region.stats().revalidated == static_cast<std::uint64_t>(round));
      // Then kept for another time to live: no request.
      CHECK(region.get_or_create("k", f.creator("x")) == "v");
      CHECK(f.since(before).total() == 1);
    }
    CHECK(region.stats().hits == 0);
    CHECK(region.stats().local_hits == 6);
    const auto m = region.metrics();
    CHECK(m.backend[static_cast<std::size_t>(dogpile::BackendOp::revalidate)].requests == 3);
    CHECK(f.creator_calls == 1);
  }

  TEST_CASE("a version check that finds the item changed or gone reads it again") {
    LocalFixture f;
    CacheRegion here(f.backend, f.local());
    CacheRegion elsewhere(f.backend, f.options());  // another process
    here.get_or_create("k", f.creator("v1"));
    elsewhere.set("k", std::string("v2"));
    f.clock.advance(1s);
    auto before = f.backend->counters();
    CHECK(here.get_or_create("k", f.creator("x")) == "v2");
    CHECK(f.since(before).total() == 2);  // the check, then the read
    CHECK(here.stats().revalidated == 0);
    // Removed elsewhere: the check sees the tombstone's new version.
    elsewhere.remove("k");
    f.clock.advance(1s);
    CHECK(here.get_or_create("k", f.creator("v3")) == "v3");
    CHECK(here.stats().revalidated == 0);
    CHECK(f.creator_calls == 2);
  }

  TEST_CASE("many keys are read together past the time to live, not checked one by one") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local());
    auto make = [](auto keys) { return std::vector<std::string>(keys.size(), "v"); };
    (void)region.get_or_create_multi({"a", "b", "c"}, make);
    f.clock.advance(1s);
    const auto before = f.backend->counters();
    (void)region.get_or_create_multi({"a", "b", "c"}, make);
    CHECK(f.since(before).total() == 1);  // one multi-get
    CHECK(region.stats().revalidated == 0);
  }

  TEST_CASE("another process's write is seen within the tier's time to live, not later") {
    LocalFixture f;
    CacheRegion here(f.backend, f.local());
    CacheRegion elsewhere(f.backend, f.options());  // another process, sharing the backend
    here.get_or_create("k", f.creator("v1"));
    elsewhere.set("k", std::string("v2"));
    // Within the bound, the value this process read.
    f.clock.advance(500ms);
    CHECK(here.get_or_create("k", f.creator("x")) == "v1");
    f.clock.advance(499ms);
    CHECK(here.get_or_create("k", f.creator("x")) == "v1");
    // At the bound, the other process's write.
    f.clock.advance(1ms);
    CHECK(here.get_or_create("k", f.creator("x")) == "v2");
    // The same for a removal elsewhere.
    elsewhere.remove("k");
    CHECK(here.get_or_create("k", f.creator("x")) == "v2");
    f.clock.advance(1s);
    CHECK(here.get_or_create("k", f.creator("v3")) == "v3");
    CHECK(f.creator_calls == 2);
  }

  TEST_CASE("this process's set, remove and invalidations apply at once") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local());
    region.get_or_create("k", f.creator("v1"));
    // set: its value is served at once (read once from the backend, then
    // from the tier).
    CHECK(region.set("k", std::string("v2")));
    auto before = f.requests();
    CHECK(region.get_or_create("k", f.creator("x")) == "v2");
    CHECK(f.requests() == before + 1);
    before = f.requests();
    CHECK(region.get_or_create("k", f.creator("x")) == "v2");
    CHECK(f.requests() == before);
    // remove: the next call creates.
    region.remove("k");
    CHECK(region.get_or_create("k", f.creator("v3")) == "v3");
    // set_multi and remove_multi too.
    CHECK(region.set_multi(std::map<std::string, std::string>{{"k", "v4"}, {"j", "j4"}}));
    CHECK(region.get_or_create("k", f.creator("x")) == "v4");
    region.remove_multi({"k", "j"});
    CHECK(region.get_or_create("k", f.creator("v5")) == "v5");
    // A per-key hard invalidation is a removal; a soft one leaves the value
    // stale: regenerated by this call, not served fresh from the tier.
    CHECK(region.invalidate("k", Invalidation::hard));
    CHECK(region.get_or_create("k", f.creator("v6")) == "v6");
    CHECK(region.invalidate("k", Invalidation::soft));
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("v7"), &outcome) == "v7");
    CHECK(outcome == Outcome::created);
    // Region-wide invalidations judge what the tier holds.
    f.clock.advance(1ms);
    region.invalidate(Invalidation::hard);
    CHECK(region.get_or_create("k", f.creator("v8"), &outcome) == "v8");
    CHECK(outcome == Outcome::created);
    f.clock.advance(1ms);
    region.invalidate(Invalidation::soft);
    CHECK(region.get_or_create("k", f.creator("v9"), &outcome) == "v9");
    CHECK(outcome == Outcome::created);
    CHECK(f.creator_calls == 7);
  }

  TEST_CASE("a value is never served from the tier past its expiration") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local({.ttl = 1h}));  // longer than the expiration
    region.get_or_create("k", f.creator("v1"));
    f.clock.advance(10s + 1us);  // past the expiration
    Outcome outcome{};
    CHECK(region.get_or_create("k", f.creator("v2"), &outcome) == "v2");
    CHECK(outcome == Outcome::created);
    CHECK(region.stats().local_hits == 0);
  }

  TEST_CASE("a read racing this process's remove does not fill the tier with the old value") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local({.ttl = 1h}));
    CacheRegion other(f.backend, f.options());
    other.set("k", Racing{"old"});  // stored, not in this process's tier
    // The read returns "old"; while it is being judged, this process removes
    // the key; the read's fill then comes late.
    racing_hook = [&] { region.remove("k"); };
    CHECK(region.get_or_create("k", [] { return Racing{"unused"}; }) == Racing{"old"});
    CHECK(racing_hook == nullptr);
    int made = 0;
    CHECK(region.get_or_create("k", [&] {
      ++made;
      return Racing{"new"};
    }) == Racing{"new"});
    CHECK(made == 1);
  }

  TEST_CASE("a read racing this process's set does not fill the tier with the old value") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local({.ttl = 1h}));
    CacheRegion other(f.backend, f.options());
    other.set("k", Racing{"old"});
    racing_hook = [&] { region.set("k", Racing{"newest"}); };
    CHECK(region.get_or_create("k", [] { return Racing{"unused"}; }) == Racing{"old"});
    CHECK(racing_hook == nullptr);
    CHECK(region.get_or_create("k", [] { return Racing{"unused"}; }) == Racing{"newest"});
    CHECK(region.get_or_create("k", [] { return Racing{"unused"}; }) == Racing{"newest"});
  }

  TEST_CASE("herd protection is unchanged: a local miss goes through the engine") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local());
    std::atomic<int> wrong{0};
    dogpile::test::run_together(16, [&](int) {
      for (int i = 0; i < 50; ++i) {
        if (region.get_or_create("k", f.creator("v")) != "v") wrong.fetch_add(1);
      }
    });
    CHECK(f.creator_calls == 1);
    CHECK(wrong == 0);
    const auto s = region.stats();
    CHECK(s.hits + s.local_hits + s.waited + s.created + s.stale_served == 16 * 50);
    CHECK(s.local_hits > 0);
  }

  TEST_CASE("get and get_or_create_multi use the tier, the rest are read in one request") {
    LocalFixture f;
    CacheRegion region(f.backend, f.local());
    region.get_or_create("a", f.creator("A"));
    CacheRegion other(f.backend, f.options());
    other.set("b", std::string("B"));
    auto before = f.backend->counters();
    CHECK(region.get<std::string>("a") == "A");
    CHECK(f.since(before).total() == 0);
    before = f.backend->counters();
    CHECK(region.get_or_create_multi({"a", "b"}, [&](auto keys) {
      return std::vector<std::string>(keys.size(), "x");
    }) == std::vector<std::string>{"A", "B"});
    CHECK(f.since(before).gets == 1);  // b alone (one key: a gets); a came from the tier
    CHECK(f.since(before).total() == 1);
    f.clock.advance(1s);  // the tier's copies are gone
    std::vector<std::string> asked;
    const auto values = region.get_or_create_multi({"a", "b", "c"}, [&](auto keys) {
      std::vector<std::string> made;
      for (auto k : keys) {
        asked.emplace_back(k);
        made.push_back("made-" + std::string(k));
      }
      return made;
    });
    CHECK(values == std::vector<std::string>{"A", "B", "made-c"});
    CHECK(asked == std::vector<std::string>{"c"});
    // All three are in the tier now.
    before = f.backend->counters();
    CHECK(region.get_or_create_multi({"a", "b", "c"}, [&](auto keys) {
      return std::vector<std::string>(keys.size(), "x");
    }) == values);
    CHECK(f.since(before).total() == 0);
    CHECK(region.get<std::string>("c") == "made-c");
    CHECK(f.since(before).total() == 0);
  }

  TEST_CASE("bounded by entries and by bytes, least recently used out first") {
    LocalFixture f;
    CacheRegion by_entries(f.backend, f.local({.ttl = 1h, .max_entries = 1600}));
    for (int i = 0; i < 8'000; ++i) {  // five times the bound
      const std::string key = "e" + std::to_string(i);
      by_entries.get_or_create(key, f.creator("v"));
    }
    CHECK(by_entries.stats().local_entries <= 1600);
    CHECK(by_entries.stats().local_entries >= 1400);
    const std::size_t bound = std::size_t{1} << 20;
    CacheRegion by_bytes(
        f.backend,
        f.local({.ttl = 1h, .max_entries = 1'000'000, .max_bytes = bound, .admission = false}));
    for (int i = 0; i < 2000; ++i) {
      const std::string key = "b" + std::to_string(i);
      by_bytes.get_or_create(key, f.creator(std::string(4000, 'x')));
    }
    CHECK(by_bytes.stats().local_bytes <= bound);
    CHECK(by_bytes.stats().local_bytes >= bound / 2);
    // The key used last is still there: no request for it (least recently
    // used; with admission, a new key goes in only once asked for more
    // often than the one it would evict: test_local_store).
    const auto before = f.requests();
    by_bytes.get_or_create("b1999", f.creator("x"));
    CHECK(f.requests() == before);
  }
}
