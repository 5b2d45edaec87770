// SPDX-License-Identifier: MIT
#include "wire_paths.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"
#include "dogpile/region.hpp"
#include "proxy.hpp"

namespace dogpile::test {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<Backend> backend_of(Transport transport, const std::string& options) {
  if (transport == Transport::meta) return std::make_shared<MemcachedMetaBackend>(options);
  return std::make_shared<MemcachedBackend>(options);
}

// No invalidation checks and no clock measurement: the counts are the
// paths' own. Errors are not expected here; they would show in the counts.
RegionOptions options_for(Expiration expiration, std::optional<Duration> stale_grace = {}) {
  RegionOptions o;
  o.expiration = expiration;
  if (stale_grace) o.stale_grace = *stale_grace;
  o.invalidation_check = std::nullopt;
  o.clock_sync = std::nullopt;
  o.on_error = [](const ErrorEvent&) {};
  return o;
}

}  // namespace

std::vector<PathCost> measure_paths(Transport transport) {
  const bool meta = transport == Transport::meta;
  MemcachedServer server;
  Proxy proxy(server.port());
  auto through = [&](RegionOptions o) {
    return std::make_unique<CacheRegion>(backend_of(transport, proxy.options()), std::move(o));
  };
  std::vector<PathCost> out;
  auto measure = [&](std::string path, std::string what, auto call) {
    proxy.reset_counts();
    call();
    out.push_back(
        PathCost{std::move(path), proxy.requests(), proxy.round_trips(), std::move(what)});
  };
  auto value = [](const char* v) { return [v] { return std::string(v); }; };

  auto region = through(options_for(10s));
  measure("cold, this caller creates",
          meta ? "mg N (won), ms C" : "gets, add lock, gets value+lock, add value, cas lock",
          [&] { region->get_or_create("cold", value("v")); });
  measure("fresh hit", meta ? "mg" : "gets", [&] { region->get_or_create("cold", value("x")); });
  {
    RegionOptions with_local = options_for(10s);
    with_local.local = LocalTier{};
    auto local = through(std::move(with_local));
    local->get_or_create("cold", value("x"));  // read once: now held in process for 1 s
    measure("fresh hit, local tier (within its time to live)", "none",
            [&] { local->get_or_create("cold", value("x")); });
  }

  // Values past their expiration on the server's clock too (their time to
  // live below the stale grace): written for real, then left to age.
  auto short_lived = through(options_for(1s, 30s));
  RegionOptions background = options_for(1s, 30s);
  background.background_refresh = true;
  auto refreshing = through(std::move(background));
  short_lived->get_or_create("stale", value("old"));
  short_lived->get_or_create("held", value("old"));
  short_lived->get_or_create("refreshed", value("old"));
  std::this_thread::sleep_for(2100ms);
  measure("stale, this caller regenerates",
          meta ? "mg R (won), ms C" : "gets, add lock, gets value+lock, cas value, cas lock",
          [&] { short_lived->get_or_create("stale", value("new")); });
  // With background refresh the winner returns the stale value at once; its
  // job creates and stores (counted apart).
  std::atomic<bool> job_done{false};
  measure("stale, this caller wins, background refresh: the call",
          meta ? "mg R (won); the job: ms C"
               : "gets, add lock, gets value+lock; the job: cas value, cas lock",
          [&] {
            refreshing->get_or_create(
                "refreshed",
                [&] {
                  std::this_thread::sleep_for(100ms);
                  job_done = true;
                  return std::string("new");
                },
                CallOptions{.background = true});
          });
  // The job is done once its flight is: stored, and its lock released (a
  // release still on its way would be counted in the next path's requests).
  while (!job_done || refreshing->in_flight() != 0) std::this_thread::sleep_for(1ms);

  // Stale while another process holds the lease.
  auto elsewhere = backend_of(transport, server.options());
  const std::string held_key = short_lived->backend_key("held");
  Lease held;
  KeyRead held_key_read{.key = held_key, .lease = &held};
  LeaseRequest request;
  request.ttl = 30s;
  elsewhere->claim({&held_key_read, 1}, request, {});
  if (held.state != LeaseState::won) throw std::runtime_error("the lease was not won");
  auto reader = through(options_for(1s, 30s));
  measure("stale, another process regenerating: first call",
          meta ? "mg (held): the stale value" : "gets, add lock (held): the stale value",
          [&] { reader->get_or_create("held", value("n")); });
  measure("stale, another process regenerating: next calls",
          meta ? "mg (held)" : "gets (the holder is remembered)",
          [&] { reader->get_or_create("held", value("n")); });
  LeaseEnd held_end{.key = held_key, .lease = &held};
  elsewhere->release({&held_end, 1}, {});

  // A cold key another process is creating: what each of the waiter's polls
  // costs.
  const std::string waited_key = region->backend_key("waited");
  Lease creating;
  KeyRead creating_read{.key = waited_key, .lease = &creating};
  elsewhere->claim({&creating_read, 1}, request, {});
  if (creating.state != LeaseState::won) throw std::runtime_error("the lease was not won");
  auto counting = std::make_shared<CountingPolls>(backend_of(transport, proxy.options()));
  CacheRegion waiting(counting, options_for(10s));
  (void)waiting.get<std::string>("warm");  // its connection, before counting
  proxy.reset_counts();
  std::thread waiter([&] { waiting.get_or_create("waited", value("second")); });
  std::this_thread::sleep_for(300ms);
  CacheRegion(elsewhere, options_for(10s)).set("waited", std::string("made"));
  waiter.join();
  LeaseEnd creating_end{.key = waited_key, .lease = &creating};
  elsewhere->release({&creating_end, 1}, {});
  {
    const int first = meta ? 1 : 2;  // the read (and, classic, the lock attempt)
    const int polls = std::max(1, counting->polls.load());
    out.push_back(PathCost{"cold, another process creating: each poll",
                           (proxy.requests() - first) / polls,
                           (proxy.round_trips() - first) / polls,
                           meta ? "mg N (held, or the value)" : "gets value+lock"});
  }

  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) keys.push_back("multi" + std::to_string(i));
  auto many = [](auto missing) { return std::vector<std::string>(missing.size(), "v"); };
  region->get_or_create_multi(keys, many);
  measure("100 fresh keys on one server (multi)",
          meta ? "100 mg q + mn: one pipeline" : "one gets of 100 keys",
          [&] { region->get_or_create_multi(keys, many); });
  return out;
}

}  // namespace dogpile::test
