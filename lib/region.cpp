#include "dogpile/region.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>

#include "dogpile/codec.hpp"
#include "dogpile/detail/keys.hpp"
#include "region_state.hpp"

namespace dogpile {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::backend:
      return "backend";
    case ErrorKind::decode:
      return "decode";
    case ErrorKind::lock:
      return "lock";
    case ErrorKind::creator:
      return "creator";
  }
  return "unknown";
}

namespace detail {

void StderrReporter::operator()(const ErrorEvent& e) {
  using Steady = std::chrono::steady_clock;
  const std::int64_t now = Steady::now().time_since_epoch().count();
  const std::int64_t second =
      std::chrono::duration_cast<Steady::duration>(std::chrono::seconds(1)).count();
  auto last = last_.load(std::memory_order_relaxed);
  if (now - last < second || !last_.compare_exchange_strong(last, now)) {
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::string key;
  for (char c : e.key.substr(0, 80)) {
    const auto b = static_cast<unsigned char>(c);
    key += (b >= 0x20 && b < 0x7f && b != '\\') ? std::string(1, c) : fmt::format("\\x{:02x}", b);
  }
  if (e.key.size() > 80) key += "...";
  std::string line = fmt::format("dogpile: {} error in {} for key \"{}\": {}", to_string(e.kind),
                                 e.operation, key, e.message);
  if (const auto held_back = suppressed_.exchange(0, std::memory_order_relaxed); held_back > 0) {
    line += fmt::format(" ({} more errors in the last second)", held_back);
  }
  line += '\n';
  std::fputs(line.c_str(), stderr);
}

Item InvalidationTimes::encode() const {
  Item item{std::string(), kFlags};
  Codec<std::int64_t>::encode(hard, item.data);
  Codec<std::int64_t>::encode(soft, item.data);
  return item;
}

std::optional<InvalidationTimes> InvalidationTimes::decode(const Item& item) noexcept {
  if (item.flags != kFlags || item.data.size() != 16) return std::nullopt;
  const std::string_view bytes(item.data);
  return InvalidationTimes{*Codec<std::int64_t>::decode(bytes.substr(0, 8)),
                           *Codec<std::int64_t>::decode(bytes.substr(8))};
}

}  // namespace detail

namespace {

using detail::Found;
using detail::LockKeeper;
using detail::Read;
using Lead = detail::FlightTable::Lead;
using SteadyClock = std::chrono::steady_clock;

std::int64_t micros(TimePoint t) noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

void validate(const RegionOptions& o) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("dogpile::CacheRegion: " + what);
  };
  if (o.expiration && *o.expiration <= Duration::zero()) {
    fail("expiration must be positive (or no_expiration)");
  }
  if (o.stale_grace < Duration::zero()) fail("stale_grace must not be negative");
  if (o.lock_timeout < std::chrono::seconds(2)) {
    fail(
        fmt::format("lock_timeout is {}s; it must be at least 2s (memcached counts a lock's "
                    "time to live in whole seconds)",
                    o.lock_timeout.count()));
  }
  if (o.wait.first_poll <= Duration::zero()) fail("wait.first_poll must be positive");
  if (o.wait.max_poll < o.wait.first_poll) fail("wait.max_poll must be at least wait.first_poll");
  if (o.wait.max_wait && *o.wait.max_wait < Duration::zero()) {
    fail("wait.max_wait must not be negative");
  }
  if (o.early_recompute_beta && !(*o.early_recompute_beta > 0.0)) {
    fail("early_recompute_beta must be positive (or nullopt: off)");
  }
  if (o.invalidation_check && *o.invalidation_check <= Duration::zero()) {
    fail("invalidation_check must be positive (or nullopt: never)");
  }
  if (o.executor && !o.background_refresh) {
    fail("an executor is set but background_refresh is off");
  }
  detail::validate_key_prefix(o.key_prefix);
}

std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t seed_from(std::uint64_t seed) {
  if (seed != 0) return seed;
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

}  // namespace

// ---------------------------------------------------------------------------
// State

CacheRegion::State::State(std::shared_ptr<Backend> b, RegionOptions o)
    : backend(std::move(b)),
      options(std::move(o)),
      clock(options.clock != nullptr ? options.clock : &system_clock()),
      invalidation_key(options.key_prefix + "#inv"),
      handler(std::make_shared<const ErrorHandler>(options.on_error)),
      random_state(seed_from(options.random_seed)),
      executor(options.background_refresh
                   ? (options.executor ? options.executor : std::make_shared<ThreadPoolExecutor>())
                   : nullptr),
      keeper([this](const std::string& key, bool lost, const char* error) {
        if (lost) {
          report(ErrorKind::lock, "extend lock", key,
                 "the lock was taken over while its creator ran; another caller may be "
                 "creating the value too");
        } else {
          report(ErrorKind::backend, "extend lock", key, error);
        }
      }) {}

CacheRegion::State::~State() {
  // Background jobs use this state: let them finish (or be dropped by the
  // executor) first.
  std::unique_lock lock(background_mutex);
  background_done.wait(lock, [&] { return background_running == 0; });
}

void CacheRegion::State::report(ErrorKind kind, std::string_view op, std::string_view key,
                                std::string_view message) noexcept {
  switch (kind) {
    case ErrorKind::backend:
      count(counters.backend_errors);
      break;
    case ErrorKind::decode:
      count(counters.decode_errors);
      break;
    case ErrorKind::lock:
      count(counters.lock_errors);
      break;
    case ErrorKind::creator:
      break;  // counted in creation_errors where it happened
  }
  try {
    std::shared_ptr<const ErrorHandler> h;
    {
      std::lock_guard lock(handler_mutex);
      h = handler;
    }
    const ErrorEvent event{kind, op, key, message};
    if (*h) {
      (*h)(event);
    } else {
      default_reporter(event);
    }
  } catch (...) {
    // A handler must not take the caller down.
  }
}

Ttl CacheRegion::State::ttl_for(const Expiration& expiration) const noexcept {
  if (!expiration) return Ttl::zero();
  return std::max(Ttl(1), std::chrono::ceil<Ttl>(*expiration + options.stale_grace));
}

Found CacheRegion::State::judge(const detail::EnvelopeView& envelope, TimePoint now,
                                const Expiration& expiration) noexcept {
  // Invalidations compare with when the creation started: a value whose
  // creator began before an invalidation may hold what it invalidated.
  const auto inv = invalidations();
  const std::int64_t started = micros(envelope.created_at) - envelope.creation_duration.count();
  if (started < inv.hard) return Found::missing;
  const bool soft_invalidated = started < inv.soft;
  if (!expiration) return soft_invalidated ? Found::stale : Found::fresh;
  const Duration age = now - envelope.created_at;
  if (age > *expiration + options.stale_grace) return Found::missing;
  if (age > *expiration || soft_invalidated) return Found::stale;
  if (options.early_recompute_beta && draw_early(*expiration - age, envelope.creation_duration)) {
    return Found::early;
  }
  return Found::fresh;
}

// XFetch: early when delta * beta * -ln(U) >= remaining, U uniform in (0, 1].
bool CacheRegion::State::draw_early(Duration remaining, std::chrono::microseconds took) noexcept {
  if (took <= std::chrono::microseconds::zero()) return false;
  const double scale = std::chrono::duration<double>(took).count() * *options.early_recompute_beta;
  const double left = std::chrono::duration<double>(remaining).count();
  if (left > scale * 40.0) return false;  // probability below e^-40: skip the draw
  const std::uint64_t bits =
      splitmix64(random_state.fetch_add(0x9E3779B97F4A7C15ull, std::memory_order_relaxed));
  const double u = (static_cast<double>(bits >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  return scale * -std::log(u) >= left;
}

Read CacheRegion::State::read(const std::string& key, std::string_view user_key, Decode decode,
                              const Expiration& expiration, bool quiet, bool keep) {
  const TimePoint now = clock->now();
  check_invalidations(now);
  Read r;
  try {
    backend->get_view(key, [&](std::string_view data, std::uint32_t flags) {
      r.found = examine(data, flags, user_key, decode, expiration, quiet, &r.created_at, now);
      if (detail::usable(r.found) && (keep || r.found != Found::fresh)) {
        r.item = Item{std::string(data), flags};
      }
    });
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    report(ErrorKind::backend, "get", user_key, e.what());
    r = Read{};
    r.found = Found::error;
  }
  return r;
}

void CacheRegion::State::check_invalidations(TimePoint at) noexcept {
  if (!options.invalidation_check) return;
  const std::int64_t now = micros(at);
  auto next = next_invalidation_check_us.load(std::memory_order_relaxed);
  if (now < next) return;
  const auto interval =
      std::chrono::duration_cast<std::chrono::microseconds>(*options.invalidation_check).count();
  // One caller per interval reads the record; the others go on with what is known.
  if (!next_invalidation_check_us.compare_exchange_strong(next, now + interval)) return;
  fetch_invalidations();
}

void CacheRegion::State::fetch_invalidations() noexcept {
  count(counters.invalidation_checks);
  try {
    const auto item = backend->get(invalidation_key);
    const auto known = invalidations();
    if (!item) {
      // Evicted, or never written: put back what this process knows.
      if (known.hard != detail::InvalidationTimes::kNever ||
          known.soft != detail::InvalidationTimes::kNever) {
        (void)backend->add(invalidation_key, known.encode(), Ttl::zero());
      }
      return;
    }
    if (auto times = detail::InvalidationTimes::decode(*item)) {
      raise_invalidations(*times);
    } else {
      report(ErrorKind::decode, "invalidation", invalidation_key,
             "the invalidation record is not readable; ignored");
    }
  } catch (const std::exception& e) {
    report(ErrorKind::backend, "invalidation", invalidation_key, e.what());
  }
}

void CacheRegion::State::raise_invalidations(const detail::InvalidationTimes& t) noexcept {
  auto raise = [](std::atomic<std::int64_t>& a, std::int64_t v) {
    auto seen = a.load(std::memory_order_relaxed);
    while (seen < v && !a.compare_exchange_weak(seen, v, std::memory_order_acq_rel)) {
    }
  };
  raise(hard_invalidated_us, t.hard);
  raise(soft_invalidated_us, t.soft);
}

bool CacheRegion::State::store(const std::string& key, std::string_view user_key, const Item& item,
                               Ttl ttl) {
  try {
    backend->set(key, item, ttl);
    return true;
  } catch (const std::exception& e) {
    report(ErrorKind::backend, "set", user_key, e.what());
    return false;
  }
}

std::shared_ptr<Item> CacheRegion::State::start_item() {
  auto item = std::make_shared<Item>();
  item->flags = detail::kEnvelopeFlags;
  detail::begin_envelope(item->data);
  return item;
}

bool CacheRegion::State::finish_item(const std::shared_ptr<Item>& item, std::string_view user_key,
                                     std::chrono::microseconds took) {
  try {
    detail::finish_envelope(item->data, clock->now(), took);
    return true;
  } catch (const std::length_error& e) {
    report(ErrorKind::backend, "set", user_key, e.what());
    return false;
  }
}

// How long a creation took, by the region's clock (which tests step).
std::chrono::microseconds CacheRegion::State::since(TimePoint started) const noexcept {
  return std::max(std::chrono::microseconds::zero(),
                  std::chrono::duration_cast<std::chrono::microseconds>(clock->now() - started));
}

std::unique_ptr<DistributedLock> CacheRegion::State::make_lock(const std::string& key) {
  return backend->make_lock(key, options.lock_timeout);
}

std::optional<bool> CacheRegion::State::try_lock(DistributedLock& lock, std::string_view user_key) {
  try {
    return lock.try_lock();
  } catch (const std::exception& e) {
    report(ErrorKind::backend, "lock", user_key, e.what());
    return std::nullopt;
  }
}

void CacheRegion::State::release(DistributedLock& lock, std::string_view user_key) {
  try {
    if (!lock.release()) {
      report(ErrorKind::lock, "release lock", user_key,
             "the lock had expired before it was released; another caller may have created "
             "the value as well");
    }
  } catch (const std::exception& e) {
    report(ErrorKind::backend, "release lock", user_key, e.what());
  }
}

LockKeeper::Ticket CacheRegion::State::keep_alive(DistributedLock* lock,
                                                  std::string_view user_key) {
  if (lock == nullptr) return {};
  return keeper.keep(*lock, std::string(user_key), LockKeeper::interval_for(lock->ttl()));
}

// Sleeps before the next poll: `pause` with +-25% jitter, so that pollers of
// many processes spread out; then doubles `pause`, up to max_poll.
void CacheRegion::State::wait_before_poll(Duration& pause) const {
  thread_local std::minstd_rand generator{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.75, 1.25);
  std::this_thread::sleep_for(std::chrono::duration_cast<Duration>(pause * factor(generator)));
  pause = std::min(pause * 2, options.wait.max_poll);
}

// A caller that found no value and could not take the lock: another process
// holds it. Polls for the value, trying the lock again whenever it is free
// (its holder finished without storing, or died). Returns the value's read;
// or a missing read with `locked` set; or with `degraded` set when the
// backend failed or max_wait ran out.
Read CacheRegion::State::wait_for_holder(const std::string& key, std::string_view user_key,
                                         DistributedLock& lock, Decode decode,
                                         const Expiration& expiration, bool& locked,
                                         bool& degraded) {
  const auto started = SteadyClock::now();
  Duration pause = options.wait.first_poll;
  for (;;) {
    wait_before_poll(pause);
    Read r = read(key, user_key, decode, expiration, /*quiet=*/true, /*keep=*/true);
    if (detail::usable(r.found)) return r;
    if (r.found == Found::error) {
      degraded = true;
      return r;
    }
    const auto taken = try_lock(lock, user_key);
    if (!taken) {
      degraded = true;
      return r;
    }
    if (*taken) {
      locked = true;
      return r;
    }
    if (options.wait.max_wait && SteadyClock::now() - started >= *options.wait.max_wait) {
      report(ErrorKind::lock, "wait", user_key,
             fmt::format(
                 "gave up waiting for the lock holder after {}; creating here",
                 std::chrono::duration_cast<std::chrono::milliseconds>(*options.wait.max_wait)));
      degraded = true;
      return r;
    }
  }
}

// The leader of this process's flight for `key`; `current` is what it read.
Outcome CacheRegion::State::lead(const std::string& key, std::string_view user_key, Lead& flight,
                                 Read current, Decode decode, Create create_fn,
                                 const detail::CallParams& params) {
  const Expiration& expiration = expiration_of(params.expiration);
  // With a value at hand (stale, or fresh but chosen to recompute early), the
  // caller never waits for another's creation.
  const bool has_value = detail::usable(current.found);
  const bool early = current.found == Found::early;
  auto serve_current = [&] {
    flight.publish(std::make_shared<const Item>(std::move(*current.item)));
    count(early ? counters.hits : counters.stale_served);
    return early ? Outcome::fresh : Outcome::stale;
  };
  bool degraded = current.found == Found::error;
  bool locked = false;
  std::unique_ptr<DistributedLock> lock;
  if (!degraded) {
    lock = make_lock(key);
    const auto taken = try_lock(*lock, user_key);
    degraded = !taken;
    locked = taken.value_or(false);
  }
  if (!locked && !degraded) {
    if (has_value) return serve_current();  // another process is regenerating it
    count(counters.lock_waits);
    Read seen = wait_for_holder(key, user_key, *lock, decode, expiration, locked, degraded);
    if (detail::usable(seen.found)) {
      const bool stale = seen.found == Found::stale;
      flight.publish(std::make_shared<const Item>(std::move(*seen.item)));
      count(stale ? counters.stale_served : counters.waited);
      return stale ? Outcome::stale : Outcome::waited;
    }
  }
  if (locked) {
    // Another caller may have stored a value between our read and our lock.
    Read again = read(key, user_key, decode, expiration, /*quiet=*/true, /*keep=*/true);
    const bool newer = !has_value || again.created_at > current.created_at;
    if ((again.found == Found::fresh || again.found == Found::early) && newer) {
      release(*lock, user_key);
      flight.publish(std::make_shared<const Item>(std::move(*again.item)));
      count(has_value ? counters.hits : counters.waited);
      return has_value ? Outcome::fresh : Outcome::waited;
    }
    if (has_value && detail::usable(again.found)) current = std::move(again);
  }
  if (has_value && params.make_job != nullptr && executor) {
    if (auto job = (*params.make_job)()) {
      if (start_background(key, user_key, flight, lock, std::move(job), expiration, current)) {
        return serve_current();
      }
    }
  }
  return create(key, user_key, flight, locked ? lock.get() : nullptr, create_fn, expiration,
                has_value ? &current : nullptr, decode);
}

// Runs the creator (holding `lock` if not null, extended while it runs),
// stores the value, releases the lock and completes the flight. `stale`, if
// not null, is the value at hand, served instead of a creator's exception
// when serve_stale_on_error is on.
Outcome CacheRegion::State::create(const std::string& key, std::string_view user_key, Lead& flight,
                                   DistributedLock* lock, Create create_fn,
                                   const Expiration& expiration, Read* stale, Decode decode) {
  // The value is encoded straight after the envelope header; the header is
  // written once the creation time is known.
  auto item = start_item();
  const TimePoint started = clock->now();
  bool keep = true;
  {
    LockKeeper::Ticket ticket = keep_alive(lock, user_key);
    try {
      keep = create_fn(item->data);
    } catch (...) {
      ticket.reset();
      if (lock != nullptr) release(*lock, user_key);
      count(counters.creation_errors);
      const auto error = std::current_exception();
      if (options.serve_stale_on_error && stale != nullptr) {
        std::string what = "the creator threw";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        report(ErrorKind::creator, "create", user_key, what + "; serving the stale value");
        const auto envelope = detail::decode_envelope(stale->item->data, stale->item->flags);
        decode(envelope.envelope->payload);  // this caller's value again
        const bool was_fresh = stale->found == Found::early;
        flight.publish(std::make_shared<const Item>(std::move(*stale->item)));
        count(was_fresh ? counters.hits : counters.stale_served);
        return was_fresh ? Outcome::fresh : Outcome::stale;
      }
      flight.fail(error);
      throw;
    }
  }
  if (!finish_item(item, user_key, since(started))) item.reset();
  if (item && keep) store(key, user_key, *item, ttl_for(expiration));
  if (lock != nullptr) release(*lock, user_key);
  count(counters.created);
  if (lock == nullptr) count(counters.degraded);
  if (item) flight.publish(std::move(item));  // else the flight is abandoned: followers retry
  return Outcome::created;
}

// Hands a regeneration to the executor. The job owns the flight and the
// lock (both moved out of the caller's hands) until it ends; the flight stays
// in the table meanwhile, so this process's other callers keep serving the
// stale value. False (everything left with the caller) if the executor
// refuses it.
bool CacheRegion::State::start_background(const std::string& key, std::string_view user_key,
                                          Lead& flight, std::unique_ptr<DistributedLock>& lock,
                                          detail::BackgroundJob job, const Expiration& expiration,
                                          const Read& stale) {
  struct Job {
    State* state;
    std::string key, user_key;
    std::optional<Lead> flight;
    std::unique_ptr<DistributedLock> lock;
    detail::BackgroundJob make;
    Expiration expiration;
    std::shared_ptr<const Item> stale;
    bool ran = false;

    ~Job() {
      if (!ran && lock) state->release(*lock, user_key);  // dropped by the executor
      lock.reset();
      flight.reset();  // abandoned if it was not completed
      std::lock_guard guard(state->background_mutex);
      if (--state->background_running == 0) state->background_done.notify_all();
    }

    void run() {
      ran = true;
      State& s = *state;
      auto item = start_item();
      const TimePoint started = s.clock->now();
      bool keep = true;
      {
        LockKeeper::Ticket ticket = s.keep_alive(lock.get(), user_key);
        try {
          keep = make(item->data);
        } catch (...) {
          ticket.reset();
          if (lock) s.release(*lock, user_key);
          count(s.counters.creation_errors);
          std::string what = "the creator threw";
          try {
            throw;
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          s.report(ErrorKind::creator, "background create", user_key,
                   what + "; the stale value stays");
          flight->publish(stale);
          return;
        }
      }
      if (!s.finish_item(item, user_key, s.since(started))) item.reset();
      if (item && keep) s.store(key, user_key, *item, s.ttl_for(expiration));
      if (lock) s.release(*lock, user_key);
      count(s.counters.created);
      if (!lock) count(s.counters.degraded);
      if (item) flight->publish(std::move(item));
    }
  };
  {
    std::lock_guard guard(background_mutex);
    ++background_running;
  }
  auto owned = std::make_shared<Job>();
  owned->state = this;
  owned->key = key;
  owned->user_key = std::string(user_key);
  owned->flight.emplace(std::move(flight));
  owned->lock = std::move(lock);
  owned->make = std::move(job);
  owned->expiration = expiration;
  owned->stale = std::make_shared<const Item>(*stale.item);
  if (executor->try_submit([owned] { owned->run(); })) {
    count(counters.background_refreshes);
    return true;
  }
  // Refused: the caller gets its flight and lock back and creates itself.
  flight = std::move(*owned->flight);
  owned->flight.reset();
  lock = std::move(owned->lock);
  owned->ran = true;  // nothing to release on its behalf
  return false;
}

// ---------------------------------------------------------------------------
// CacheRegion

CacheRegion::CacheRegion(std::shared_ptr<Backend> backend, RegionOptions options) {
  if (!backend) throw std::invalid_argument("dogpile::CacheRegion: the backend must not be null");
  validate(options);
  state_ = std::make_unique<State>(std::move(backend), std::move(options));
}

CacheRegion::~CacheRegion() = default;

Outcome CacheRegion::get_or_create_bytes(std::string_view user_key, Decode decode, Create create,
                                         const detail::CallParams& params) {
  State& s = *state_;
  const std::string key = detail::map_key(s.options.key_prefix, user_key);
  const Expiration& expiration = s.expiration_of(params.expiration);
  bool counted_miss = false;
  for (;;) {
    Read current = s.read(key, user_key, decode, expiration);
    if (current.found == Found::fresh) {
      State::count(s.counters.hits);
      return Outcome::fresh;
    }
    if (current.found == Found::early || current.found == Found::stale) {
      auto lead = s.flights.try_lead(key);
      if (!lead) {  // someone in this process is regenerating it
        const bool early = current.found == Found::early;
        State::count(early ? s.counters.hits : s.counters.stale_served);
        return early ? Outcome::fresh : Outcome::stale;
      }
      if (current.found == Found::early) State::count(s.counters.early_recomputes);
      return s.lead(key, user_key, *lead, std::move(current), decode, create, params);
    }
    if (!counted_miss) {
      State::count(s.counters.misses);
      counted_miss = true;
    }
    auto [flight, lead] = s.flights.join(key);
    if (lead) return s.lead(key, user_key, *lead, std::move(current), decode, create, params);

    State::count(s.counters.lock_waits);
    const auto result = flight->wait();
    if (result.error) std::rethrow_exception(result.error);
    if (!result.item) continue;  // the leader gave up: start over
    const Found found = s.examine(*result.item, user_key, decode, expiration);
    if (found == Found::missing) continue;
    const bool stale = found == Found::stale;
    State::count(stale ? s.counters.stale_served : s.counters.waited);
    return stale ? Outcome::stale : Outcome::waited;
  }
}

bool CacheRegion::get_bytes(std::string_view user_key, Decode decode, TimePoint* created_at,
                            bool* fresh, const Expiration* expiration) {
  State& s = *state_;
  const std::string key = detail::map_key(s.options.key_prefix, user_key);
  const Read r = s.read(key, user_key, decode, s.expiration_of(expiration));
  const bool is_fresh = r.found == Found::fresh || r.found == Found::early;
  State::count(is_fresh ? s.counters.hits : s.counters.misses);
  if (!detail::usable(r.found)) return false;
  if (fresh != nullptr) *fresh = is_fresh;
  if (created_at != nullptr) *created_at = r.created_at;
  return true;
}

bool CacheRegion::set_bytes(std::string_view user_key, Encode encode,
                            const Expiration* expiration) {
  State& s = *state_;
  auto item = s.build_item(user_key, encode, std::chrono::microseconds(0));
  if (!item) return false;
  return s.store(detail::map_key(s.options.key_prefix, user_key), user_key, *item,
                 s.ttl_for(s.expiration_of(expiration)));
}

bool CacheRegion::remove(std::string_view user_key) {
  State& s = *state_;
  try {
    return s.backend->remove(detail::map_key(s.options.key_prefix, user_key));
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "remove", user_key, e.what());
    return false;
  }
}

void CacheRegion::invalidate(Invalidation kind) {
  State& s = *state_;
  const std::int64_t now = micros(s.clock->now());
  detail::InvalidationTimes mine;
  (kind == Invalidation::hard ? mine.hard : mine.soft) = now;
  s.raise_invalidations(mine);  // this process: at once
  // Others: merge into the stored record. Two processes invalidating at the
  // same moment may overwrite each other's write; reading back and merging
  // again (a few times) settles that.
  for (int attempt = 0; attempt < 3; ++attempt) {
    try {
      const auto item = s.backend->get(s.invalidation_key);
      auto stored = item ? detail::InvalidationTimes::decode(*item) : std::nullopt;
      if (stored && stored->covers(mine)) return;
      detail::InvalidationTimes merged = stored.value_or(detail::InvalidationTimes{});
      merged.hard = std::max(merged.hard, mine.hard);
      merged.soft = std::max(merged.soft, mine.soft);
      s.backend->set(s.invalidation_key, merged.encode(), Ttl::zero());
      s.raise_invalidations(merged);
    } catch (const std::exception& e) {
      s.report(ErrorKind::backend, "invalidate", s.invalidation_key, e.what());
      return;
    }
  }
}

void CacheRegion::check_created_count(std::size_t got, std::size_t wanted) {
  if (got != wanted) {
    throw std::invalid_argument(fmt::format(
        "dogpile: get_or_create_multi's creator returned {} values for {} keys", got, wanted));
  }
}

RegionStats CacheRegion::stats() const noexcept {
  const auto& c = state_->counters;
  auto load = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  RegionStats r;
  r.hits = load(c.hits);
  r.misses = load(c.misses);
  r.stale_served = load(c.stale_served);
  r.waited = load(c.waited);
  r.created = load(c.created);
  r.creation_errors = load(c.creation_errors);
  r.lock_waits = load(c.lock_waits);
  r.degraded = load(c.degraded);
  r.backend_errors = load(c.backend_errors);
  r.decode_errors = load(c.decode_errors);
  r.lock_errors = load(c.lock_errors);
  r.early_recomputes = load(c.early_recomputes);
  r.background_refreshes = load(c.background_refreshes);
  r.invalidation_checks = load(c.invalidation_checks);
  return r;
}

std::size_t CacheRegion::in_flight() const { return state_->flights.size(); }

void CacheRegion::set_error_handler(ErrorHandler handler) {
  auto h = std::make_shared<const ErrorHandler>(std::move(handler));
  std::lock_guard lock(state_->handler_mutex);
  state_->handler = std::move(h);
}

const RegionOptions& CacheRegion::options() const noexcept { return state_->options; }
Backend& CacheRegion::backend() const noexcept { return *state_->backend; }

std::string CacheRegion::backend_key(std::string_view key) const {
  return detail::map_key(state_->options.key_prefix, key);
}

}  // namespace dogpile
