// SPDX-License-Identifier: MIT
// Never another key's value (SPEC I1): every item dogpile stores is bound to
// its key; an item read for one key but stored under another — a misrouted
// reply, a proxy that mixes keys up, a connection shared across processes —
// is a miss, reported as a decode error, on every path.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "dogpile/cached.hpp"
#include "region_fixture.hpp"

using namespace std::chrono_literals;
using dogpile::Backend;
using dogpile::CacheRegion;
using dogpile::Item;

namespace {

// A server that answers reads of one key with another key's item (writes go
// where they were meant to). A plain Backend: the region reaches it through
// the default lease operations.
class Misrouting final : public Backend {
 public:
  explicit Misrouting(std::shared_ptr<dogpile::MemoryBackend> inner) : inner_(std::move(inner)) {}
  std::map<std::string, std::string, std::less<>> answer_with;  // key read -> key answered

  void read(std::span<dogpile::KeyRead> keys, const dogpile::LeaseRequest&,
            const dogpile::Request& request, const Visit* visit) override {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      keys[i].item = inner_->gets(routed(keys[i].key), keys[i].cas, request);
      if (visit != nullptr && keys[i].item) {
        (*visit)(i, keys[i].item->data, keys[i].item->flags);
        keys[i].item.reset();
      }
    }
  }
  void write(std::span<dogpile::KeyWrite> items, const dogpile::Request& request) override {
    inner_->write(items, request);
  }
  void erase(std::span<dogpile::KeyErase> keys, const dogpile::Request& request) override {
    inner_->erase(keys, request);
  }
  std::unique_ptr<dogpile::DistributedLock> make_lock(std::string_view key,
                                                      dogpile::Ttl ttl) override {
    return inner_->make_lock(key, ttl);
  }

 private:
  std::string_view routed(std::string_view key) const {
    const auto it = answer_with.find(key);
    return it == answer_with.end() ? key : std::string_view(it->second);
  }
  std::shared_ptr<dogpile::MemoryBackend> inner_;
};

}  // namespace

TEST_SUITE("key binding") {
  TEST_CASE("an item stored under another key is never served, on any path") {
    dogpile::test::RegionFixture f;
    auto misrouting = std::make_shared<Misrouting>(f.backend);
    CacheRegion region(misrouting, f.options());
    REQUIRE(region.set("alice", std::string("alice's data")));
    REQUIRE(region.set("bob", std::string("bob's data")));
    misrouting->answer_with[region.backend_key("bob")] = region.backend_key("alice");

    CHECK_FALSE(region.get<std::string>("bob").has_value());
    CHECK_FALSE(region.get_value_metadata<std::string>("bob").has_value());
    CHECK_FALSE(region.get_multi<std::string>({"bob"})[0].has_value());
    CHECK(region.get_multi<std::string>({"alice", "bob"})[0] == "alice's data");
    CHECK(region.get_or_create("bob", f.creator("made for bob")) == "made for bob");
    CHECK(region.get_or_create_multi({"bob", "carol"}, [](std::span<const std::string_view> keys) {
      return std::vector<std::string>(keys.size(), "made");
    }) == std::vector<std::string>{"made", "made"});
    auto lookup =
        dogpile::cached(region, "user", [](const std::string& who) { return "made:" + who; });
    misrouting->answer_with[region.backend_key(lookup.key("bob"))] = region.backend_key("alice");
    CHECK(lookup("bob") == "made:bob");

    const auto stats = region.stats();
    CHECK(stats.decode_errors >= 7);
    std::size_t mismatches = 0;
    for (const auto& [kind, message] : f.errors) {
      if (message.find("stored under another key") != std::string::npos) ++mismatches;
    }
    CHECK(mismatches == stats.decode_errors);
  }

  TEST_CASE("an invalidation record read from another key is ignored, and says what it is for") {
    dogpile::test::RegionFixture f;
    auto misrouting = std::make_shared<Misrouting>(f.backend);
    auto o = f.options();
    o.invalidation_check = 1s;
    o.key_prefix = "mine:";
    auto other_options = f.options();
    other_options.key_prefix = "other:";
    CacheRegion other(f.backend, other_options);
    other.invalidate(dogpile::Invalidation::hard);  // another region's record
    CacheRegion region(misrouting, o);
    misrouting->answer_with["mine:#inv"] = "other:#inv";
    region.set("k", std::string("v"));
    f.clock.advance(2s);
    CHECK(region.get<std::string>("k") == "v");  // the other region's invalidation does not apply
    CHECK(f.errors_of(dogpile::ErrorKind::decode) >= 1);  // at each check
    CHECK(f.errors.back().second.find("invalidation record") != std::string::npos);
  }
}
