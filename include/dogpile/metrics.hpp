// SPDX-License-Identifier: MIT
// dogpile/metrics.hpp — what a region measures, who may watch it, and its
// Prometheus text exposition.
//
// Every region keeps, besides the counters of RegionStats:
//   - the latency of its calls, a histogram per result (fresh, stale,
//     waited, created, failed);
//   - the durations of its creators;
//   - its backend requests by operation (reads, leases and locks, stores,
//     releases, lock extensions, ...): counts, failures and a latency
//     histogram each.
// CacheRegion::metrics() returns them; dogpile::prometheus_text() renders
// them (and the counters) in Prometheus' text format; an Observer set in
// RegionOptions::observer sees each event as it happens:
//
//   struct SlowRequests : dogpile::Observer {
//     void on_backend(const dogpile::BackendEvent& e) noexcept override {
//       if (e.took > std::chrono::milliseconds(50)) log_slow(to_string(e.op), e.key);
//     }
//   };
//   options.observer = std::make_shared<SlowRequests>();
//   ...
//   http.get("/metrics", [&] { return dogpile::prometheus_text(region, "users"); });
//
// Latencies are measured on the region's clock (RegionOptions::clock).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "dogpile/clock.hpp"
#include "dogpile/outcome.hpp"

namespace dogpile {

class CacheRegion;
struct RegionStats;

/// A latency histogram: counts per bucket (not cumulative), each bucket
/// holding durations up to its bound (the last: any longer), and their sum.
struct Histogram {
  /// The buckets' upper bounds in seconds, 50 us to 10 s; a last bucket
  /// takes what is longer.
  static constexpr std::array<double, 17> bounds{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                 0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                                 0.5,     1,      2.5,     5,      10};
  std::array<std::uint64_t, bounds.size() + 1> counts{};
  std::uint64_t count = 0;
  double sum_seconds = 0;

  /// The upper bound of the bucket that holds quantile `q` (0 to 1) of the
  /// durations: an estimate from above; +infinity for the last bucket; 0 if
  /// there are none.
  [[nodiscard]] double quantile_bound(double q) const noexcept;
};

/// What a backend request did. One event per request to the backend's API,
/// which may be one network round trip for many keys.
enum class BackendOp : std::uint8_t {
  get,           ///< a read of values (the hot path's one request; a multi-get)
  lease,         ///< taking the right to create: a lock's add, or the meta protocol's lease
  confirm,       ///< a read after winning the lease: what to fence the store against
  poll,          ///< a waiter's read of the value and the lease together
  store,         ///< a write of values or tombstones (set, add, cas)
  release,       ///< giving a lock or lease back (and retries of one that failed)
  extend,        ///< a held lock's time to live renewed while its creator runs
  mark_stale,    ///< a per-key soft invalidation in place (meta protocol)
  invalidation,  ///< the region's invalidation record read or written
  clock,         ///< the server's clock read (RegionOptions::clock_sync)
  revalidate,    ///< a local-tier item's version asked, to keep it if unchanged
};
inline constexpr std::size_t kBackendOps = 11;
[[nodiscard]] const char* to_string(BackendOp op) noexcept;

struct BackendOpMetrics {
  std::uint64_t requests = 0;
  std::uint64_t failures = 0;  ///< of those, requests that threw
  Histogram latency;
};

/// A region's measurements (CacheRegion::metrics()).
struct RegionMetrics {
  /// Calls to get_or_create (or a wrapper) that returned, indexed by their
  /// Outcome; a call over many keys counts as its costliest key (created
  /// over waited over stale over fresh).
  std::array<Histogram, kOutcomes> calls;
  Histogram failed_calls;                             ///< calls that threw
  Histogram creations;                                ///< creator durations, failed ones too
  std::array<BackendOpMetrics, kBackendOps> backend;  ///< indexed by BackendOp
};

/// A backend request, as it ended.
struct BackendEvent {
  BackendOp op;
  std::string_view key;  ///< the user's key (the first, for many), or the region's record
  std::size_t keys = 1;  ///< how many keys the request was for
  Duration took{};
  bool ok = true;  ///< false: it threw (the error is reported too)
};

/// A call to get_or_create (or get_or_create_multi, a wrapper), as it ended.
struct CallEvent {
  /// How it was served (the costliest of its keys); nullopt: it threw.
  std::optional<Outcome> outcome;
  std::string_view key;  ///< the first key
  std::size_t keys = 1;
  Duration took{};
};

/// A creator's run.
struct CreationEvent {
  std::string_view key;  ///< the first key
  std::size_t keys = 1;
  Duration took{};
  bool ok = true;           ///< false: the creator threw
  bool background = false;  ///< ran on the executor (background refresh)
};

/// Sees a region's events as they happen (RegionOptions::observer). Called
/// from the thread that did the work (a caller's, the executor's, or the
/// region's keeper thread), so it must be thread-safe and quick; it must not
/// call back into the region. The views are valid only during the call.
class Observer {
 public:
  virtual ~Observer() = default;
  virtual void on_backend(const BackendEvent&) noexcept {}
  virtual void on_call(const CallEvent&) noexcept {}
  virtual void on_creation(const CreationEvent&) noexcept {}
};

/// The region's counters and measurements in Prometheus' text exposition
/// format (version 0.0.4), each series labelled region="<name>": counters
/// dogpile_<stat>_total, gauges dogpile_local_entries and
/// dogpile_local_bytes, histograms dogpile_call_seconds{result=...},
/// dogpile_creation_seconds and dogpile_backend_request_seconds{op=...}, and
/// dogpile_backend_requests_total / dogpile_backend_failures_total{op=...}.
/// Thread-safe; takes no lock the region's callers wait on.
[[nodiscard]] std::string prometheus_text(const CacheRegion& region,
                                          std::string_view name = "default");
/// The same for several regions in one page: each metric's HELP and TYPE
/// once, a series per region.
[[nodiscard]] std::string prometheus_text(
    std::initializer_list<std::pair<std::string_view, const CacheRegion*>> regions);

}  // namespace dogpile
