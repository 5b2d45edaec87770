// The state and algorithm behind CacheRegion (internal): shared by
// region.cpp (single keys) and region_multi.cpp (many keys at once).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/detail/envelope.hpp"
#include "dogpile/region.hpp"
#include "flight.hpp"
#include "lock_keeper.hpp"

namespace dogpile {
namespace detail {

// What the backend holds for a key, judged at one instant.
enum class Found {
  fresh,    // younger than the expiration
  early,    // fresh, but chosen for early recomputation (XFetch)
  stale,    // expired (or soft-invalidated), within the stale grace
  missing,  // nothing usable: absent, too old, hard-invalidated, or unreadable
  error,    // the backend failed
};

inline bool usable(Found f) noexcept {
  return f == Found::fresh || f == Found::early || f == Found::stale;
}

struct Read {
  Found found = Found::missing;
  std::optional<Item> item;  // the envelope, when usable
  TimePoint created_at;      // its creation time
};

// The default error handler: one line per second at most, with a count of
// the lines it held back.
class StderrReporter {
 public:
  void operator()(const ErrorEvent& e);

 private:
  std::atomic<std::int64_t> last_{std::numeric_limits<std::int64_t>::min() / 2};
  std::atomic<std::uint64_t> suppressed_{0};
};

// The region's invalidation timestamps, in microseconds since the epoch:
// values whose creation started before `hard` are misses, before `soft`
// stale. Only ever raised. Stored in the backend as one item of two
// little-endian int64s under `<prefix>#inv`, with its own flags.
struct InvalidationTimes {
  std::int64_t hard = kNever;
  std::int64_t soft = kNever;
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::min();
  static constexpr std::uint32_t kFlags = 0x64704901;  // "dpI" + version 1

  [[nodiscard]] Item encode() const;
  [[nodiscard]] static std::optional<InvalidationTimes> decode(const Item& item) noexcept;
  [[nodiscard]] bool covers(const InvalidationTimes& other) const noexcept {
    return hard >= other.hard && soft >= other.soft;
  }
};

}  // namespace detail

struct CacheRegion::State {
  using Found = detail::Found;
  using Read = detail::Read;
  using Lead = detail::FlightTable::Lead;

  State(std::shared_ptr<Backend> b, RegionOptions o);
  ~State();

  // --- counters ---
  struct Counters {
    std::atomic<std::uint64_t> hits{0}, misses{0}, stale_served{0}, waited{0}, created{0},
        creation_errors{0}, lock_waits{0}, degraded{0}, backend_errors{0}, decode_errors{0},
        lock_errors{0}, early_recomputes{0}, background_refreshes{0}, invalidation_checks{0};
  };
  static void count(std::atomic<std::uint64_t>& c) noexcept {
    c.fetch_add(1, std::memory_order_relaxed);
  }

  // --- errors ---
  void report(ErrorKind kind, std::string_view op, std::string_view key,
              std::string_view message) noexcept;

  // --- judging ---
  const Expiration& expiration_of(const Expiration* override_) const noexcept {
    return override_ != nullptr ? *override_ : options.expiration;
  }
  Ttl ttl_for(const Expiration& expiration) const noexcept;
  Found judge(const detail::EnvelopeView& envelope, TimePoint now,
              const Expiration& expiration) noexcept;
  bool draw_early(Duration remaining, std::chrono::microseconds took) noexcept;

  // Judges a stored item and, if it is usable, decodes its value with
  // `decode`. An item that does not decode is missing; it is reported unless
  // `quiet` (a caller's re-reads do not report the item its first read did).
  template <class DecodeFn>
  Found examine(const Item& item, std::string_view user_key, DecodeFn&& decode,
                const Expiration& expiration, bool quiet = false, TimePoint* created_at = nullptr,
                std::optional<TimePoint> now = std::nullopt) {
    return examine(item.data, item.flags, user_key, decode, expiration, quiet, created_at, now);
  }
  template <class DecodeFn>
  Found examine(std::string_view data, std::uint32_t flags, std::string_view user_key,
                DecodeFn&& decode, const Expiration& expiration, bool quiet = false,
                TimePoint* created_at = nullptr, std::optional<TimePoint> now = std::nullopt) {
    const auto result = detail::decode_envelope(data, flags);
    if (!result.envelope) {
      if (!quiet) report(ErrorKind::decode, "decode", user_key, detail::to_string(result.error));
      return Found::missing;
    }
    if (created_at != nullptr) *created_at = result.envelope->created_at;
    const Found found = judge(*result.envelope, now ? *now : clock->now(), expiration);
    if (found == Found::missing) return found;
    if (!decode(result.envelope->payload)) {
      if (!quiet) {
        report(ErrorKind::decode, "decode", user_key,
               "the stored value does not decode as the requested type");
      }
      return Found::missing;
    }
    return found;
  }

  // One backend `get` (after the invalidation record, if it is due). The
  // item's bytes are kept in the Read when it is usable and not fresh, or
  // always with `keep` (to hand to followers); a fresh hit copies nothing.
  Read read(const std::string& key, std::string_view user_key, Decode decode,
            const Expiration& expiration, bool quiet = false, bool keep = false);

  // --- invalidation ---
  void check_invalidations(TimePoint now) noexcept;  // reads the record if the interval has passed
  void fetch_invalidations() noexcept;
  void raise_invalidations(const detail::InvalidationTimes& t) noexcept;
  detail::InvalidationTimes invalidations() const noexcept {
    return {hard_invalidated_us.load(std::memory_order_acquire),
            soft_invalidated_us.load(std::memory_order_acquire)};
  }

  // --- writing ---
  bool store(const std::string& key, std::string_view user_key, const Item& item, Ttl ttl);
  static std::shared_ptr<Item> start_item();
  bool finish_item(const std::shared_ptr<Item>& item, std::string_view user_key,
                   std::chrono::microseconds took);
  template <class EncodeFn>
  std::shared_ptr<Item> build_item(std::string_view user_key, EncodeFn&& encode,
                                   std::chrono::microseconds took) {
    auto item = start_item();
    encode(item->data);
    return finish_item(item, user_key, took) ? item : nullptr;
  }
  std::chrono::microseconds since(TimePoint started) const noexcept;

  // --- locking ---
  std::unique_ptr<DistributedLock> make_lock(const std::string& key);
  std::optional<bool> try_lock(DistributedLock& lock, std::string_view user_key);
  void release(DistributedLock& lock, std::string_view user_key);
  detail::LockKeeper::Ticket keep_alive(DistributedLock* lock, std::string_view user_key);
  void wait_before_poll(Duration& pause) const;

  // --- the algorithm ---
  Read wait_for_holder(const std::string& key, std::string_view user_key, DistributedLock& lock,
                       Decode decode, const Expiration& expiration, bool& locked, bool& degraded);
  Outcome lead(const std::string& key, std::string_view user_key, Lead& flight, Read current,
               Decode decode, Create create_fn, const detail::CallParams& params);
  Outcome create(const std::string& key, std::string_view user_key, Lead& flight,
                 DistributedLock* lock, Create create_fn, const Expiration& expiration, Read* stale,
                 Decode decode);
  bool start_background(const std::string& key, std::string_view user_key, Lead& flight,
                        std::unique_ptr<DistributedLock>& lock, detail::BackgroundJob job,
                        const Expiration& expiration, const Read& stale);

  // --- members ---
  std::shared_ptr<Backend> backend;
  const RegionOptions options;
  const Clock* const clock;
  const std::string invalidation_key;
  Counters counters;
  detail::FlightTable flights;

  std::mutex handler_mutex;
  std::shared_ptr<const ErrorHandler> handler;
  detail::StderrReporter default_reporter;

  std::atomic<std::int64_t> hard_invalidated_us{detail::InvalidationTimes::kNever};
  std::atomic<std::int64_t> soft_invalidated_us{detail::InvalidationTimes::kNever};
  std::atomic<std::int64_t> next_invalidation_check_us{std::numeric_limits<std::int64_t>::min()};

  std::atomic<std::uint64_t> random_state;  // splitmix64 counter for early recomputation

  std::shared_ptr<Executor> executor;  // set when background_refresh is on
  std::mutex background_mutex;
  std::condition_variable background_done;
  std::size_t background_running = 0;  // jobs handed to the executor, not yet finished

  detail::LockKeeper keeper;  // last: its thread stops before the rest goes
};

}  // namespace dogpile
