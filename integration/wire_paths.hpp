// Requests and round trips per region path, counted on the wire by a Proxy
// in front of a real memcached: measured once here, asserted by the wire test
// (integration/test_wire.cpp) and printed by the benchmark (bench/).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "dogpile/backend.hpp"
#include "memcached_server.hpp"

namespace dogpile::test {

/// A Backend that passes everything to `inner` and counts the engine's polls
/// (one per round of a waiter's wait, however many keys it polls).
class CountingPolls final : public Backend {
 public:
  explicit CountingPolls(std::shared_ptr<Backend> inner) : inner_(std::move(inner)) {}
  std::atomic<int> polls{0};

  std::optional<Item> get(std::string_view key) override { return inner_->get(key); }
  void set(std::string_view key, const Item& item, Ttl ttl) override {
    inner_->set(key, item, ttl);
  }
  bool add(std::string_view key, const Item& item, Ttl ttl) override {
    return inner_->add(key, item, ttl);
  }
  bool remove(std::string_view key) override { return inner_->remove(key); }
  std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override {
    return inner_->make_lock(key, ttl);
  }
  std::optional<Item> gets(std::string_view key, Cas& cas) override {
    return inner_->gets(key, cas);
  }
  bool cas(std::string_view key, const Item& item, Ttl ttl, Cas version) override {
    return inner_->cas(key, item, ttl, version);
  }
  bool read_view(LeaseSlot& slot, const LeaseRequest& request,
                 detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) override {
    return inner_->read_view(slot, request, visit);
  }
  void read(std::span<LeaseSlot> slots, const LeaseRequest& request) override {
    inner_->read(slots, request);
  }
  void claim(std::span<LeaseSlot> slots, const LeaseRequest& request) override {
    inner_->claim(slots, request);
  }
  void confirm(std::span<LeaseSlot> slots) override { inner_->confirm(slots); }
  void poll(std::span<LeaseSlot> slots, const LeaseRequest& request) override {
    polls.fetch_add(1);
    inner_->poll(slots, request);
  }
  void store(std::span<LeaseSlot> slots) override { inner_->store(slots); }
  void release(std::span<LeaseSlot> slots) override { inner_->release(slots); }
  std::optional<ServerTime> server_time(std::string_view key) override {
    return inner_->server_time(key);
  }

 private:
  std::shared_ptr<Backend> inner_;
};

struct PathCost {
  std::string path;  // e.g. "cold, this caller creates"
  int requests = 0;
  int round_trips = 0;
  std::string what;  // the requests, in order
};

/// Runs each path of get_or_create once (twice for the stale value held
/// elsewhere) on `transport` against a memcached it starts, and returns what
/// each cost on the wire: cold winner, fresh hit, stale winner, stale while
/// another process regenerates (its first call, then the next), a cold
/// waiter's poll, and 100 fresh keys in one multi call. Takes about 3 s (a
/// value is left to age past its expiration on the server's clock).
[[nodiscard]] std::vector<PathCost> measure_paths(Transport transport);

}  // namespace dogpile::test
