// SPDX-License-Identifier: MIT
#include "engine/fleet_clock.hpp"

#include <algorithm>
#include <new>

namespace dogpile::detail {
namespace {

// How fast the offset may wander: 2,000 parts per million. Quartz clocks
// drift far less; memcached's clock does not: it ticks on a one-second timer
// re-armed after each tick, so the instant of its tick moves by about a
// millisecond a second (measured: 1.1 ms/s on memcached 1.6.18).
constexpr double kDrift = 2000e-6;
// Samples of the first sweep, and their spacing: about a tenth of a second
// apart, so they fall at different phases of a one-second server clock.
constexpr int kBurst = 11;
constexpr auto kBurstSpacing = std::chrono::milliseconds(97);
// Then bisection: samples timed for the instant the server's clock should
// tick by the current estimate; whichever side of the tick it lands on, the
// interval halves. This many, one a tick, before renewals take over.
constexpr int kBisections = 8;
// The least time before a bisection sample, so that it is not taken at once.
constexpr auto kMinGap = std::chrono::milliseconds(50);

}  // namespace

FleetClock::FleetClock(const Clock& local, Backend& backend, std::string reference_key,
                       std::optional<Duration> resync, Metrics* metrics)
    : local_(local),
      backend_(backend),
      metrics_(metrics),
      reference_key_(std::move(reference_key)),
      resync_(resync),
      enabled_(resync.has_value()) {}

Duration FleetClock::uncertainty() const {
  if (!measured_.load(std::memory_order_acquire)) return Duration::max();
  std::lock_guard lock(mutex_);
  return (high_ - low_) / 2;
}

std::chrono::microseconds FleetClock::error() const {
  if (!measured_.load(std::memory_order_acquire)) return std::chrono::microseconds(0);
  return std::chrono::ceil<std::chrono::microseconds>(uncertainty());
}

void FleetClock::measure_first() {
  std::lock_guard first(first_mutex_);
  if (measured_.load(std::memory_order_acquire)) return;
  if (local_.steady_now() < first_retry_at_) return;
  if (!sample()) first_retry_at_ = local_.steady_now() + std::chrono::seconds(1);
}

void FleetClock::reset_after_fork() noexcept {
  new (&first_mutex_) std::mutex;
  new (&mutex_) std::mutex;
}

bool FleetClock::sample(std::string* error) {
  if (!enabled_ || unavailable_.load(std::memory_order_relaxed)) return false;
  std::optional<ServerTime> server;
  const TimePoint t0 = local_.now();
  try {
    server = measured(metrics_, BackendOp::clock, reference_key_, 1,
                      [&] { return backend_.server_time(reference_key_, Request{}); });
  } catch (const std::exception& e) {
    if (error != nullptr) *error = e.what();
    std::lock_guard lock(mutex_);
    ++failures_;
    return false;
  }
  const TimePoint t1 = local_.now();
  if (!server) {
    unavailable_.store(true, std::memory_order_relaxed);
    return false;
  }
  const Duration low = server->time - t1;
  const Duration high = server->time + server->resolution - t0;
  std::lock_guard lock(mutex_);
  resolution_ = server->resolution;
  if (measured_.load(std::memory_order_relaxed)) {
    // The old bounds, widened by how far the clocks may have drifted since.
    const auto since = std::max(Duration::zero(), t1 - bounds_at_);
    const auto drift = std::chrono::duration_cast<Duration>(since * kDrift);
    const Duration old_low = low_ - drift;
    const Duration old_high = high_ + drift;
    const Duration new_low = std::max(old_low, low);
    const Duration new_high = std::min(old_high, high);
    if (new_low <= new_high) {
      low_ = new_low;
      high_ = new_high;
    } else {
      // Disjoint: a clock was stepped. Start again from this sample.
      low_ = low;
      high_ = high;
      samples_in_burst_ = 0;
    }
  } else {
    low_ = low;
    high_ = high;
  }
  bounds_at_ = t1;
  ++samples_in_burst_;
  failures_ = 0;
  // memcached's clock lags real time by the phase of its one-second tick (0
  // to 1 s): a host whose clock agrees with it that far is in step, and
  // keeps its own time. Another takes the server's, moved on by half a tick.
  const Duration tolerance = std::chrono::milliseconds(1);
  const bool in_step = low_ <= tolerance && high_ >= -(resolution_ + tolerance);
  offset_.store(in_step ? 0 : (low_ + (high_ - low_) / 2 + resolution_ / 2).count(),
                std::memory_order_release);
  doubt_.store(in_step ? 0 : ((high_ - low_) / 2).count(), std::memory_order_release);
  measured_.store(true, std::memory_order_release);
  return true;
}

std::optional<Duration> FleetClock::next_delay() const {
  if (!enabled_ || unavailable_.load(std::memory_order_relaxed)) return std::nullopt;
  std::lock_guard lock(mutex_);
  if (failures_ > 0) {  // the server is away: back off, up to resync
    return std::min<Duration>(*resync_, std::chrono::seconds(1) * (1 << std::min(failures_, 6)));
  }
  if (!measured_.load(std::memory_order_relaxed) || samples_in_burst_ < kBurst) {
    return kBurstSpacing;
  }
  // Renewals, and the bisections before them, wait for the server clock's
  // next tick as this host sees it (a coarse clock ticks at a whole multiple
  // of its resolution) at least `gap` from now.
  const Duration gap = samples_in_burst_ < kBurst + kBisections ? Duration(kMinGap) : *resync_;
  if (resolution_ <= Duration::zero()) return gap;  // an exact clock: no ticks to aim for
  const TimePoint now = local_.now();
  // Aimed by the interval's middle (the estimate may be this host's clock):
  // a sample there halves the interval, whichever side of the tick it lands.
  const Duration middle = low_ + (high_ - low_) / 2;
  const Duration server_soon = (now + gap + middle).time_since_epoch();
  const Duration next_tick = (server_soon / resolution_ + 1) * resolution_;
  return TimePoint(next_tick) - middle - now;
}

}  // namespace dogpile::detail
