// SPDX-License-Identifier: MIT
#include "engine/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

#include "dogpile/region.hpp"

namespace dogpile {

const char* to_string(BackendOp op) noexcept {
  switch (op) {
    case BackendOp::get:
      return "get";
    case BackendOp::lease:
      return "lease";
    case BackendOp::confirm:
      return "confirm";
    case BackendOp::poll:
      return "poll";
    case BackendOp::store:
      return "store";
    case BackendOp::release:
      return "release";
    case BackendOp::extend:
      return "extend";
    case BackendOp::mark_stale:
      return "mark_stale";
    case BackendOp::invalidation:
      return "invalidation";
    case BackendOp::clock:
      return "clock";
    case BackendOp::revalidate:
      return "revalidate";
  }
  return "unknown";
}

double Histogram::quantile_bound(double q) const noexcept {
  if (count == 0) return 0;
  const double wanted = q * static_cast<double>(count);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    seen += counts[i];
    if (static_cast<double>(seen) >= wanted && seen > 0) return bounds[i];
  }
  return std::numeric_limits<double>::infinity();
}

namespace detail {

void AtomicHistogram::add(Duration d) noexcept {
  const auto ns =
      std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  const double seconds = static_cast<double>(ns) / 1e9;
  std::size_t i = 0;
  while (i < Histogram::bounds.size() && seconds > Histogram::bounds[i]) ++i;
  Slot& slot = slots_[ShardedCounter::slot()];
  slot.counts[i].fetch_add(1, std::memory_order_relaxed);
  slot.sum_ns.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
}

Histogram AtomicHistogram::snapshot() const noexcept {
  Histogram h;
  std::uint64_t sum_ns = 0;
  for (const Slot& slot : slots_) {
    for (std::size_t i = 0; i < slot.counts.size(); ++i) {
      const auto n = slot.counts[i].load(std::memory_order_relaxed);
      h.counts[i] += n;
      h.count += n;
    }
    sum_ns += slot.sum_ns.load(std::memory_order_relaxed);
  }
  h.sum_seconds = static_cast<double>(sum_ns) / 1e9;
  return h;
}

void Metrics::record(BackendOp op, std::string_view key, std::size_t keys, Duration took,
                     bool ok) noexcept {
  Op& o = ops_[static_cast<std::size_t>(op)];
  o.requests.fetch_add(1, std::memory_order_relaxed);
  if (!ok) o.failures.fetch_add(1, std::memory_order_relaxed);
  o.latency.add(took);
  if (observer_) observer_->on_backend(BackendEvent{op, key, keys, took, ok});
}

void Metrics::call(std::optional<Outcome> outcome, std::string_view key, std::size_t keys,
                   Duration took) noexcept {
  (outcome ? calls_[static_cast<std::size_t>(*outcome)] : failed_calls_).add(took);
  if (observer_) observer_->on_call(CallEvent{outcome, key, keys, took});
}

void Metrics::creation(std::string_view key, std::size_t keys, Duration took, bool ok,
                       bool background) noexcept {
  creations_.add(took);
  if (observer_) observer_->on_creation(CreationEvent{key, keys, took, ok, background});
}

RegionMetrics Metrics::snapshot() const noexcept {
  RegionMetrics m;
  for (std::size_t i = 0; i < kOutcomes; ++i) m.calls[i] = calls_[i].snapshot();
  m.failed_calls = failed_calls_.snapshot();
  m.creations = creations_.snapshot();
  for (std::size_t i = 0; i < kBackendOps; ++i) {
    m.backend[i].requests = ops_[i].requests.load(std::memory_order_relaxed);
    m.backend[i].failures = ops_[i].failures.load(std::memory_order_relaxed);
    m.backend[i].latency = ops_[i].latency.snapshot();
  }
  return m;
}

}  // namespace detail

namespace {

struct Named {
  std::string_view name;
  RegionStats stats;
  RegionMetrics metrics;
  std::optional<FleetStats> fleet;  // its backend's gutter and journals
};

// A label value, escaped as the format asks (backslash, quote, newline).
std::string label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void histogram(std::string& out, std::string_view name, const std::string& labels,
               const Histogram& h) {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < Histogram::bounds.size(); ++i) {
    cumulative += h.counts[i];
    fmt::format_to(std::back_inserter(out), "{}_bucket{{{},le=\"{}\"}} {}\n", name, labels,
                   Histogram::bounds[i], cumulative);
  }
  fmt::format_to(std::back_inserter(out), "{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels,
                 h.count);
  fmt::format_to(std::back_inserter(out), "{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name, labels,
                 h.sum_seconds, name, labels, h.count);
}

std::string render(std::span<const Named> regions) {
  std::string out;
  auto region_label = [](const Named& r) { return fmt::format("region=\"{}\"", label(r.name)); };
  struct Counter {
    const char* name;
    const char* help;
    std::uint64_t RegionStats::*field;
  };
  static constexpr Counter counters[] = {
      // Counted per key: a multi call of five keys adds five. Calls are
      // counted by dogpile_call_seconds_count, by result.
      {"key_hits", "Keys found fresh in the backend (per key; calls: dogpile_call_seconds_count).",
       &RegionStats::hits},
      {"key_local_hits",
       "Keys served fresh from the local tier, with no request (per key; calls: "
       "dogpile_call_seconds_count).",
       &RegionStats::local_hits},
      {"key_revalidated",
       "Local-tier keys kept past their time because the backend said they had not changed (per "
       "key; each is also a local hit).",
       &RegionStats::revalidated},
      {"key_misses", "Keys whose first read found no usable value (per key).",
       &RegionStats::misses},
      {"key_stale_served",
       "Keys served an expired value while another caller regenerated it (per key; calls: "
       "dogpile_call_seconds_count).",
       &RegionStats::stale_served},
      {"key_waited",
       "Keys that waited for another caller's value (per key; calls: "
       "dogpile_call_seconds_count).",
       &RegionStats::waited},
      {"key_created",
       "Keys whose value this process made (per key; creator runs: "
       "dogpile_creation_seconds_count).",
       &RegionStats::created},
      {"creation_errors", "Creator runs that threw.", &RegionStats::creation_errors},
      {"lock_waits", "Waits on another caller's creation.", &RegionStats::lock_waits},
      {"degraded", "Creations without the distributed lock (backend failing).",
       &RegionStats::degraded},
      {"key_kept_served", "Keys served a value kept in process while the backend failed (per key).",
       &RegionStats::kept_served},
      {"backend_errors", "Backend operations that failed.", &RegionStats::backend_errors},
      {"decode_errors", "Stored items that did not decode.", &RegionStats::decode_errors},
      {"lock_errors", "Locks lost, or creators declared hung.", &RegionStats::lock_errors},
      {"locks_lost", "Locks found gone before their release.", &RegionStats::locks_lost},
      {"hung_creations", "Creators that ran past max_creation.", &RegionStats::hung_creations},
      {"fenced_out", "Creations not stored: the key was written while they ran.",
       &RegionStats::fenced_out},
      {"wait_timeouts", "Waits ended by a deadline, a stop or max_wait.",
       &RegionStats::wait_timeouts},
      {"early_recomputes", "Fresh values recomputed early (XFetch).",
       &RegionStats::early_recomputes},
      {"background_refreshes", "Regenerations handed to the executor.",
       &RegionStats::background_refreshes},
      {"invalidation_checks", "Reads of the region's invalidation record.",
       &RegionStats::invalidation_checks},
      {"removals", "Tombstones written by remove() and invalidate(key).", &RegionStats::removals},
      {"compressed", "Values compressed to be stored.", &RegionStats::compressed},
  };
  for (const Counter& c : counters) {
    const std::string name = fmt::format("dogpile_{}_total", c.name);
    family(out, name, "counter", c.help);
    for (const Named& r : regions) {
      fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, region_label(r),
                     r.stats.*c.field);
    }
  }
  for (const auto& [name, help, field] :
       {std::tuple{"dogpile_local_entries", "Items in the local tier.",
                   &RegionStats::local_entries},
        std::tuple{"dogpile_local_bytes", "The local tier's items' cost in bytes.",
                   &RegionStats::local_bytes}}) {
    family(out, name, "gauge", help);
    for (const Named& r : regions) {
      fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, region_label(r),
                     r.stats.*field);
    }
  }
  family(out, "dogpile_call_seconds", "histogram",
         "Latency of get_or_create calls, by how they ended (per call: a multi call is one, "
         "with the result of its costliest key; keys: dogpile_key_*_total).");
  for (const Named& r : regions) {
    for (std::size_t i = 0; i < kOutcomes; ++i) {
      histogram(
          out, "dogpile_call_seconds",
          fmt::format("{},result=\"{}\"", region_label(r), to_string(static_cast<Outcome>(i))),
          r.metrics.calls[i]);
    }
    histogram(out, "dogpile_call_seconds", fmt::format("{},result=\"failed\"", region_label(r)),
              r.metrics.failed_calls);
  }
  family(out, "dogpile_creation_seconds", "histogram",
         "Creator run times (per run: a multi creation is one; keys: dogpile_key_created_total).");
  for (const Named& r : regions) {
    histogram(out, "dogpile_creation_seconds", region_label(r), r.metrics.creations);
  }
  // The gutter and the journals, for the regions whose backend has them.
  if (std::any_of(regions.begin(), regions.end(), [](const Named& r) { return r.fleet; })) {
    for (const auto& [name, type, help, field] :
         {std::tuple{"dogpile_gutter_requests_total", "counter",
                     "Requests sent to the gutter while a key's server was marked down (the "
                     "region's backend).",
                     &FleetStats::gutter_requests},
          std::tuple{"dogpile_journal_kept_total", "counter",
                     "Keys a server missed while away, kept to be deleted there when it answers.",
                     &FleetStats::journal_kept},
          std::tuple{"dogpile_journal_replayed_total", "counter",
                     "Kept keys deleted on their server once it answered.",
                     &FleetStats::journal_replayed},
          std::tuple{"dogpile_journal_dropped_total", "counter",
                     "Keys a full journal could not keep: their server may serve what their "
                     "writes replaced until it expires.",
                     &FleetStats::journal_dropped},
          std::tuple{"dogpile_journal_pending", "gauge",
                     "Keys waiting for their server to answer (lost if the process ends).",
                     &FleetStats::journal_pending}}) {
      family(out, name, type, help);
      for (const Named& r : regions) {
        if (r.fleet) {
          fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, region_label(r),
                         (*r.fleet).*field);
        }
      }
    }
  }
  // A counter per operation, from each region's BackendOpMetrics.
  auto per_op = [&](std::string_view name, std::string_view help,
                    std::uint64_t BackendOpMetrics::*field) {
    family(out, name, "counter", help);
    for (const Named& r : regions) {
      for (std::size_t i = 0; i < kBackendOps; ++i) {
        fmt::format_to(std::back_inserter(out), "{}{{{},op=\"{}\"}} {}\n", name, region_label(r),
                       to_string(static_cast<BackendOp>(i)), r.metrics.backend[i].*field);
      }
    }
  };
  per_op("dogpile_backend_requests_total",
         "Backend requests, by operation (lock and lease traffic included).",
         &BackendOpMetrics::requests);
  per_op("dogpile_backend_failures_total", "Backend requests that failed, by operation.",
         &BackendOpMetrics::failures);
  family(out, "dogpile_backend_request_seconds", "histogram",
         "Latency of backend requests, by operation.");
  for (const Named& r : regions) {
    for (std::size_t i = 0; i < kBackendOps; ++i) {
      histogram(out, "dogpile_backend_request_seconds",
                fmt::format("{},op=\"{}\"", region_label(r), to_string(static_cast<BackendOp>(i))),
                r.metrics.backend[i].latency);
    }
  }
  return out;
}

}  // namespace

std::string prometheus_text(const CacheRegion& region, std::string_view name) {
  const Named one{name, region.stats(), region.metrics(), region.backend().fleet_stats()};
  return render({&one, 1});
}

std::string prometheus_text(
    std::initializer_list<std::pair<std::string_view, const CacheRegion*>> regions) {
  std::vector<Named> named;
  named.reserve(regions.size());
  for (const auto& [name, region] : regions) {
    named.push_back({name, region->stats(), region->metrics(), region->backend().fleet_stats()});
  }
  return render(named);
}

}  // namespace dogpile
