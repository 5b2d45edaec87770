// SPDX-License-Identifier: MIT
#include "engine/invalidation.hpp"

#include <algorithm>
#include <string>

#include "dogpile/codec.hpp"
#include "format/keys.hpp"

namespace dogpile::detail {

Invalidations::Invalidations(Backend& backend, std::string key, std::optional<Duration> interval,
                             const Clock& clock, Reporter& reporter, Counters& counters,
                             Metrics* metrics)
    : backend_(backend),
      key_(std::move(key)),
      check_(key_check(key_)),
      interval_(interval),
      clock_(clock),
      reporter_(reporter),
      counters_(counters),
      metrics_(metrics) {}

bool Invalidations::check(SteadyTime at) noexcept {
  if (!interval_) return false;
  const auto now = at.time_since_epoch().count();
  auto next = next_check_.load(std::memory_order_relaxed);
  if (now < next) return false;
  const auto step = std::chrono::duration_cast<SteadyTime::duration>(*interval_).count();
  // One caller per interval reads the record; the others go on with what is known.
  if (!next_check_.compare_exchange_strong(next, now + step)) return false;
  fetch();
  return true;
}

void Invalidations::fetch() noexcept {
  Counters::add(counters_.invalidation_checks);
  try {
    const auto item =
        measured(metrics_, BackendOp::invalidation, key_, 1, [&] { return backend_.get(key_); });
    const auto known = current();
    if (!item) {
      // Evicted, or never written: put back what this process knows.
      if (known.hard != InvalidationTimes::kNever || known.soft != InvalidationTimes::kNever) {
        (void)measured(metrics_, BackendOp::invalidation, key_, 1,
                       [&] { return backend_.add(key_, known.encode(check_), Ttl::zero()); });
      }
      return;
    }
    if (auto times = InvalidationTimes::decode(*item, check_)) {
      raise(*times);
    } else {
      reporter_.report(ErrorKind::decode, "read invalidation record", key_,
                       "the region's invalidation record (written by invalidate()) is not "
                       "readable or belongs to another key; ignored");
    }
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "read invalidation record", key_, e,
                     " (every invalidation_check, a region reads this record to learn of "
                     "invalidate() calls made by any process; until it can, it judges "
                     "with the invalidations it knows)");
  }
}

void Invalidations::raise(const InvalidationTimes& t) noexcept {
  auto raise_to = [](std::atomic<std::int64_t>& a, std::int64_t v) {
    auto seen = a.load(std::memory_order_relaxed);
    while (seen < v && !a.compare_exchange_weak(seen, v, std::memory_order_acq_rel)) {
    }
  };
  raise_to(hard_, t.hard);
  raise_to(soft_, t.soft);
}

void Invalidations::invalidate(Invalidation kind, TimePoint at) noexcept {
  const std::int64_t now = micros_since_epoch(at);
  InvalidationTimes mine;
  (kind == Invalidation::hard ? mine.hard : mine.soft) = now;
  raise(mine);  // this process: at once
  // Others: merge into the stored record. Two processes invalidating at the
  // same moment may overwrite each other's write; reading back and merging
  // again (a few times) settles that.
  for (int attempt = 0; attempt < 3; ++attempt) {
    try {
      const auto item =
          measured(metrics_, BackendOp::invalidation, key_, 1, [&] { return backend_.get(key_); });
      auto stored = item ? InvalidationTimes::decode(*item, check_) : std::nullopt;
      if (stored && stored->covers(mine)) return;
      InvalidationTimes merged = stored.value_or(InvalidationTimes{});
      merged.hard = std::max(merged.hard, mine.hard);
      merged.soft = std::max(merged.soft, mine.soft);
      measured(metrics_, BackendOp::invalidation, key_, 1,
               [&] { backend_.set(key_, merged.encode(check_), Ttl::zero()); });
      raise(merged);
    } catch (const std::exception& e) {
      reporter_.report(ErrorKind::backend, "write invalidation record", key_, e);
      return;
    }
  }
}

}  // namespace dogpile::detail
