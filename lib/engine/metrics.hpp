// SPDX-License-Identifier: MIT
// The region's measurements (internal): atomic histograms and per-operation
// request counts, read as RegionMetrics, and the Observer's calls.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include "base/sharded_counter.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/metrics.hpp"

namespace dogpile::detail {

// A histogram many threads add to: a copy per slot of ShardedCounter's (a
// thread adds to its own), summed when read.
class AtomicHistogram {
 public:
  void add(Duration d) noexcept;
  [[nodiscard]] Histogram snapshot() const noexcept;

 private:
  struct alignas(64) Slot {
    std::array<std::atomic<std::uint64_t>, Histogram::bounds.size() + 1> counts{};
    std::atomic<std::uint64_t> sum_ns{0};
  };
  std::array<Slot, ShardedCounter::kSlots> slots_{};
};

class Metrics {
 public:
  Metrics(const Clock& clock, std::shared_ptr<Observer> observer)
      : clock_(clock), observer_(std::move(observer)) {}

  [[nodiscard]] SteadyTime now() const { return clock_.steady_now(); }

  /// Runs `request` (one backend request) and records it: its time, and
  /// whether it threw (the exception goes on). `excluded`, if given, is time
  /// the request spent in its caller's code (a read's visitor decoding the
  /// value), taken off.
  template <class Fn>
  decltype(auto) backend(BackendOp op, std::string_view key, std::size_t keys, Fn&& request,
                         const Duration* excluded = nullptr) {
    Timed timed{*this, op, key, keys, now(), excluded};
    if constexpr (std::is_void_v<std::invoke_result_t<Fn&>>) {
      request();
      timed.ok = true;
    } else {
      auto result = request();
      timed.ok = true;
      return result;
    }
  }

  void call(std::optional<Outcome> outcome, std::string_view key, std::size_t keys,
            Duration took) noexcept;
  void creation(std::string_view key, std::size_t keys, Duration took, bool ok,
                bool background) noexcept;

  [[nodiscard]] RegionMetrics snapshot() const noexcept;

  /// One backend request, as it ended (backend() records its own).
  void record(BackendOp op, std::string_view key, std::size_t keys, Duration took,
              bool ok) noexcept;

 private:
  struct Timed {
    Metrics& metrics;
    BackendOp op;
    std::string_view key;
    std::size_t keys;
    SteadyTime started;
    const Duration* excluded;
    bool ok = false;
    ~Timed() {
      const Duration took = metrics.now() - started;
      metrics.record(op, key, keys, excluded != nullptr ? took - *excluded : took, ok);
    }
  };
  struct Op {
    std::atomic<std::uint64_t> requests{0}, failures{0};
    AtomicHistogram latency;
  };

  const Clock& clock_;
  std::shared_ptr<Observer> observer_;
  std::array<AtomicHistogram, kOutcomes> calls_;
  AtomicHistogram failed_calls_;
  AtomicHistogram creations_;
  std::array<Op, kBackendOps> ops_;
};

/// Adds the time from its construction to its destruction to `total`.
class Stopwatch {
 public:
  Stopwatch(const Metrics& metrics, Duration& total) noexcept
      : metrics_(metrics), total_(total), started_(metrics.now()) {}
  ~Stopwatch() { total_ += metrics_.now() - started_; }
  Stopwatch(const Stopwatch&) = delete;
  Stopwatch& operator=(const Stopwatch&) = delete;

 private:
  const Metrics& metrics_;
  Duration& total_;
  SteadyTime started_;
};

/// metrics->backend(...), or just `request()` without metrics.
template <class Fn>
decltype(auto) measured(Metrics* metrics, BackendOp op, std::string_view key, std::size_t keys,
                        Fn&& request) {
  if (metrics == nullptr) return request();
  return metrics->backend(op, key, keys, std::forward<Fn>(request));
}

}  // namespace dogpile::detail
