// SPDX-License-Identifier: MIT
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

  void read(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request,
            const Visit* visit) override {
    inner_->read(keys, lease, request, visit);
  }
  void write(std::span<KeyWrite> items, const Request& request) override {
    inner_->write(items, request);
  }
  void erase(std::span<KeyErase> keys, const Request& request) override {
    inner_->erase(keys, request);
  }
  std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override {
    return inner_->make_lock(key, ttl);
  }
  void claim(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override {
    inner_->claim(keys, lease, request);
  }
  void confirm(std::span<KeyRead> keys, const Request& request) override {
    inner_->confirm(keys, request);
  }
  void poll(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request) override {
    polls.fetch_add(1);
    inner_->poll(keys, lease, request);
  }
  void release(std::span<LeaseEnd> leases, const Request& request) override {
    inner_->release(leases, request);
  }
  std::optional<bool> mark_stale(std::string_view key, Ttl keep_for,
                                 const Request& request) override {
    return inner_->mark_stale(key, keep_for, request);
  }
  std::optional<ServerTime> server_time(std::string_view key, const Request& request) override {
    return inner_->server_time(key, request);
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
