#include "dogpile/region.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include "dogpile/detail/envelope.hpp"
#include "dogpile/detail/keys.hpp"
#include "flight.hpp"
#include "lock_keeper.hpp"

namespace dogpile {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::backend:
      return "backend";
    case ErrorKind::decode:
      return "decode";
    case ErrorKind::lock:
      return "lock";
  }
  return "unknown";
}

namespace {

using detail::FlightTable;
using detail::LockKeeper;
using Lead = FlightTable::Lead;
using SteadyClock = std::chrono::steady_clock;

// What the backend holds for a key, judged at one instant.
enum class Found {
  fresh,    // a value younger than the expiration
  stale,    // expired, but within the stale grace
  missing,  // nothing usable: absent, too old, or unreadable
  error,    // the backend failed
};

struct Read {
  Found found = Found::missing;
  std::optional<Item> item;  // the envelope, when fresh or stale
  TimePoint created_at;      // its creation time
};

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
  detail::validate_key_prefix(o.key_prefix);
}

// Backoff pause with +-25% jitter, so pollers of many processes spread out.
Duration jittered(Duration pause) {
  thread_local std::minstd_rand generator{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.75, 1.25);
  return std::chrono::duration_cast<Duration>(pause * factor(generator));
}

// The default error handler: one line per second at most, with a count of
// the lines it held back.
class StderrReporter {
 public:
  void operator()(const ErrorEvent& e) {
    const auto now = SteadyClock::now().time_since_epoch().count();
    auto last = last_.load(std::memory_order_relaxed);
    const auto second = std::chrono::duration_cast<SteadyClock::duration>(std::chrono::seconds(1));
    if (now - last < second.count() || !last_.compare_exchange_strong(last, now)) {
      suppressed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const auto held_back = suppressed_.exchange(0, std::memory_order_relaxed);
    std::string line = fmt::format("dogpile: {} error in {} for key \"{}\": {}", to_string(e.kind),
                                   e.operation, printable(e.key), e.message);
    if (held_back > 0) line += fmt::format(" ({} more errors in the last second)", held_back);
    line += '\n';
    std::fputs(line.c_str(), stderr);
  }

 private:
  static std::string printable(std::string_view key) {
    std::string out;
    for (char c : key.substr(0, 80)) {
      const auto b = static_cast<unsigned char>(c);
      if (b >= 0x20 && b < 0x7f && b != '\\') {
        out += c;
      } else {
        out += fmt::format("\\x{:02x}", b);
      }
    }
    if (key.size() > 80) out += "...";
    return out;
  }
  std::atomic<SteadyClock::rep> last_{std::numeric_limits<SteadyClock::rep>::min() / 2};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace

struct CacheRegion::State {
  State(std::shared_ptr<Backend> b, RegionOptions o)
      : backend(std::move(b)),
        options(std::move(o)),
        clock(options.clock != nullptr ? options.clock : &system_clock()),
        item_ttl(options.expiration ? std::max(Ttl(1), std::chrono::ceil<Ttl>(*options.expiration +
                                                                              options.stale_grace))
                                    : Ttl::zero()),
        handler(std::make_shared<const ErrorHandler>(options.on_error)),
        keeper([this](const std::string& key, bool lost, const char* error) {
          if (lost) {
            report(ErrorKind::lock, "extend lock", key,
                   "the lock was taken over while its creator ran; another caller may be "
                   "creating the value too");
          } else {
            report(ErrorKind::backend, "extend lock", key, error);
          }
        }) {}

  // --- counters -------------------------------------------------------------
  struct Counters {
    std::atomic<std::uint64_t> hits{0}, misses{0}, stale_served{0}, waited{0}, created{0},
        creation_errors{0}, lock_waits{0}, degraded{0}, backend_errors{0}, decode_errors{0},
        lock_errors{0};
  };
  static void count(std::atomic<std::uint64_t>& c) noexcept {
    c.fetch_add(1, std::memory_order_relaxed);
  }

  // --- errors ---------------------------------------------------------------
  void report(ErrorKind kind, std::string_view op, std::string_view key,
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

  // --- reading --------------------------------------------------------------
  [[nodiscard]] Found judge(TimePoint created_at, TimePoint now) const noexcept {
    if (!options.expiration) return Found::fresh;
    const Duration age = now - created_at;
    if (age <= *options.expiration) return Found::fresh;
    if (age <= *options.expiration + options.stale_grace) return Found::stale;
    return Found::missing;
  }

  // Judges a stored item and, if it is usable, decodes its value with
  // `decode`. An item that does not decode is missing; it is reported unless
  // `quiet` (a caller's re-reads do not report the item its first read did).
  template <class DecodeFn>
  Found examine(const Item& item, std::string_view user_key, DecodeFn&& decode, bool quiet = false,
                TimePoint* created_at = nullptr) {
    const auto result = detail::decode_envelope(item.data, item.flags);
    if (!result.envelope) {
      if (!quiet) report(ErrorKind::decode, "decode", user_key, detail::to_string(result.error));
      return Found::missing;
    }
    if (created_at != nullptr) *created_at = result.envelope->created_at;
    const Found found = judge(result.envelope->created_at, clock->now());
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

  // One backend `get`; decodes a usable value with `decode`.
  Read read(const std::string& key, std::string_view user_key, Decode decode, bool quiet = false) {
    Read r;
    std::optional<Item> item;
    try {
      item = backend->get(key);
    } catch (const std::exception& e) {
      report(ErrorKind::backend, "get", user_key, e.what());
      r.found = Found::error;
      return r;
    }
    if (!item) return r;
    r.found = examine(*item, user_key, decode, quiet, &r.created_at);
    if (r.found != Found::missing) r.item = std::move(item);
    return r;
  }

  // --- writing --------------------------------------------------------------
  bool store(const std::string& key, std::string_view user_key, const Item& item) {
    try {
      backend->set(key, item, item_ttl);
      return true;
    } catch (const std::exception& e) {
      report(ErrorKind::backend, "set", user_key, e.what());
      return false;
    }
  }

  // An envelope item holding what `encode` appends, created now. Null (and
  // reported) if it cannot be built: a value of 4 GiB or more.
  template <class EncodeFn>
  std::shared_ptr<Item> build_item(std::string_view user_key, EncodeFn&& encode,
                                   std::chrono::microseconds took) {
    auto item = start_item();
    encode(item->data);
    return finish_item(item, user_key, took) ? item : nullptr;
  }
  static std::shared_ptr<Item> start_item() {
    auto item = std::make_shared<Item>();
    item->flags = detail::kEnvelopeFlags;
    detail::begin_envelope(item->data);
    return item;
  }
  bool finish_item(const std::shared_ptr<Item>& item, std::string_view user_key,
                   std::chrono::microseconds took) {
    try {
      detail::finish_envelope(item->data, clock->now(), took);
      return true;
    } catch (const std::length_error& e) {
      report(ErrorKind::backend, "set", user_key, e.what());
      return false;
    }
  }

  // --- locking --------------------------------------------------------------
  std::unique_ptr<DistributedLock> make_lock(const std::string& key) {
    return backend->make_lock(key, options.lock_timeout);
  }

  // One attempt at the lock; nullopt if the backend failed (reported).
  std::optional<bool> try_lock(DistributedLock& lock, std::string_view user_key) {
    try {
      return lock.try_lock();
    } catch (const std::exception& e) {
      report(ErrorKind::backend, "lock", user_key, e.what());
      return std::nullopt;
    }
  }

  void release(DistributedLock& lock, std::string_view user_key) {
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

  LockKeeper::Ticket keep_alive(DistributedLock* lock, std::string_view user_key) {
    if (lock == nullptr) return {};
    return keeper.keep(*lock, std::string(user_key), LockKeeper::interval_for(lock->ttl()));
  }

  // --- the algorithm --------------------------------------------------------

  // A caller that found no value and could not take the lock: another process
  // holds it. Polls for the value, trying the lock again whenever it is free
  // (its holder finished without storing, or died). Returns the value's read
  // (fresh or stale); or a missing read with `locked` set; or with
  // `degraded` set when the backend failed or max_wait ran out.
  Read wait_for_holder(const std::string& key, std::string_view user_key, DistributedLock& lock,
                       Decode decode, bool& locked, bool& degraded) {
    const auto started = SteadyClock::now();
    Duration pause = options.wait.first_poll;
    for (;;) {
      std::this_thread::sleep_for(jittered(pause));
      pause = std::min(pause * 2, options.wait.max_poll);
      Read r = read(key, user_key, decode, /*quiet=*/true);
      if (r.found == Found::fresh || r.found == Found::stale) return r;
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

  // Runs the creator (holding `lock` if not null, extended while it runs),
  // stores the value, releases the lock and completes the flight.
  Outcome create(const std::string& key, std::string_view user_key, Lead& flight,
                 DistributedLock* lock, Encode create_fn) {
    // The creator's value is encoded straight after the envelope header; the
    // header is written once the creation time is known.
    auto item = start_item();
    const auto started = SteadyClock::now();
    {
      LockKeeper::Ticket ticket = keep_alive(lock, user_key);
      try {
        create_fn(item->data);
      } catch (...) {
        ticket.reset();
        if (lock != nullptr) release(*lock, user_key);
        count(counters.creation_errors);
        flight.fail(std::current_exception());
        throw;
      }
    }
    const auto took =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - started);
    if (!finish_item(item, user_key, took)) item.reset();
    if (item) store(key, user_key, *item);
    if (lock != nullptr) release(*lock, user_key);
    count(counters.created);
    if (lock == nullptr) count(counters.degraded);
    if (item) flight.publish(std::move(item));  // else the flight is abandoned: followers retry
    return Outcome::created;
  }

  // The leader of this process's flight for `key`; `current` is what it read.
  Outcome lead(const std::string& key, std::string_view user_key, Lead& flight, Read current,
               Decode decode, Encode create_fn) {
    const bool had_stale = current.found == Found::stale;
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
      if (had_stale) {  // another process is regenerating it
        flight.publish(std::make_shared<const Item>(std::move(*current.item)));
        count(counters.stale_served);
        return Outcome::stale;
      }
      count(counters.lock_waits);
      Read seen = wait_for_holder(key, user_key, *lock, decode, locked, degraded);
      if (seen.found == Found::fresh || seen.found == Found::stale) {
        const bool fresh = seen.found == Found::fresh;
        flight.publish(std::make_shared<const Item>(std::move(*seen.item)));
        count(fresh ? counters.waited : counters.stale_served);
        return fresh ? Outcome::waited : Outcome::stale;
      }
    }
    if (locked) {
      // Another caller may have stored a value between our read and our lock.
      Read again = read(key, user_key, decode, /*quiet=*/true);
      if (again.found == Found::fresh) {
        release(*lock, user_key);
        flight.publish(std::make_shared<const Item>(std::move(*again.item)));
        count(had_stale ? counters.hits : counters.waited);
        return had_stale ? Outcome::fresh : Outcome::waited;
      }
    }
    return create(key, user_key, flight, locked ? lock.get() : nullptr, create_fn);
  }

  std::shared_ptr<Backend> backend;
  const RegionOptions options;
  const Clock* const clock;
  const Ttl item_ttl;
  Counters counters;
  FlightTable flights;
  std::mutex handler_mutex;
  std::shared_ptr<const ErrorHandler> handler;
  StderrReporter default_reporter;
  LockKeeper keeper;  // last: its thread stops before the rest goes
};

CacheRegion::CacheRegion(std::shared_ptr<Backend> backend, RegionOptions options) {
  if (!backend) throw std::invalid_argument("dogpile::CacheRegion: the backend must not be null");
  validate(options);
  state_ = std::make_unique<State>(std::move(backend), std::move(options));
}

CacheRegion::~CacheRegion() = default;

Outcome CacheRegion::get_or_create_bytes(std::string_view user_key, Decode decode, Encode create) {
  State& s = *state_;
  const std::string key = detail::map_key(s.options.key_prefix, user_key);
  bool counted_miss = false;
  for (;;) {
    Read current = s.read(key, user_key, decode);
    if (current.found == Found::fresh) {
      State::count(s.counters.hits);
      return Outcome::fresh;
    }
    if (current.found == Found::stale) {
      auto lead = s.flights.try_lead(key);
      if (!lead) {  // someone in this process is regenerating it
        State::count(s.counters.stale_served);
        return Outcome::stale;
      }
      return s.lead(key, user_key, *lead, std::move(current), decode, create);
    }
    if (!counted_miss) {
      State::count(s.counters.misses);
      counted_miss = true;
    }
    auto [flight, lead] = s.flights.join(key);
    if (lead) return s.lead(key, user_key, *lead, std::move(current), decode, create);

    State::count(s.counters.lock_waits);
    const auto result = flight->wait();
    if (result.error) std::rethrow_exception(result.error);
    if (!result.item) continue;  // the leader gave up: start over
    const Found found = s.examine(*result.item, user_key, decode);
    if (found == Found::fresh || found == Found::missing) {
      if (found == Found::missing) continue;
      State::count(s.counters.waited);
      return Outcome::waited;
    }
    State::count(s.counters.stale_served);
    return Outcome::stale;
  }
}

bool CacheRegion::get_bytes(std::string_view user_key, Decode decode, TimePoint* created_at,
                            bool* fresh) {
  State& s = *state_;
  const std::string key = detail::map_key(s.options.key_prefix, user_key);
  const Read r = s.read(key, user_key, decode);
  State::count(r.found == Found::fresh ? s.counters.hits : s.counters.misses);
  if (r.found != Found::fresh && r.found != Found::stale) return false;
  if (fresh != nullptr) *fresh = r.found == Found::fresh;
  if (created_at != nullptr) *created_at = r.created_at;
  return true;
}

bool CacheRegion::set_bytes(std::string_view user_key, Encode encode) {
  State& s = *state_;
  auto item = s.build_item(user_key, encode, std::chrono::microseconds(0));
  if (!item) return false;
  return s.store(detail::map_key(s.options.key_prefix, user_key), user_key, *item);
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

void CacheRegion::get_multi_bytes(std::span<const std::string_view> user_keys, DecodeAt decode) {
  State& s = *state_;
  std::vector<std::string> keys;
  keys.reserve(user_keys.size());
  for (auto k : user_keys) keys.push_back(detail::map_key(s.options.key_prefix, k));
  std::vector<std::string_view> views(keys.begin(), keys.end());
  std::vector<std::optional<Item>> items;
  try {
    items = s.backend->get_multi(views);
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "get_multi",
             user_keys.empty() ? std::string_view() : user_keys.front(), e.what());
    return;
  }
  for (std::size_t i = 0; i < items.size() && i < user_keys.size(); ++i) {
    bool fresh = false;
    if (items[i]) {
      fresh = s.examine(*items[i], user_keys[i], [&](std::string_view payload) {
        return decode(i, payload);
      }) == Found::fresh;
    }
    State::count(fresh ? s.counters.hits : s.counters.misses);
  }
}

bool CacheRegion::set_multi_bytes(std::span<const std::string_view> user_keys, EncodeAt encode) {
  State& s = *state_;
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Item>> items;
  std::vector<KeyedItem> batch;
  bool ok = true;
  for (std::size_t i = 0; i < user_keys.size(); ++i) {
    auto item = s.build_item(
        user_keys[i], [&](std::string& out) { encode(i, out); }, std::chrono::microseconds(0));
    if (!item) {
      ok = false;
      continue;
    }
    keys.push_back(detail::map_key(s.options.key_prefix, user_keys[i]));
    items.push_back(std::move(item));
  }
  for (std::size_t i = 0; i < keys.size(); ++i) batch.push_back(KeyedItem{keys[i], items[i].get()});
  if (batch.empty()) return ok;
  try {
    s.backend->set_multi(batch, s.item_ttl);
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "set_multi", user_keys.front(), e.what());
    return false;
  }
  return ok;
}

bool CacheRegion::remove_multi_bytes(std::span<const std::string_view> user_keys) {
  State& s = *state_;
  std::vector<std::string> keys;
  keys.reserve(user_keys.size());
  for (auto k : user_keys) keys.push_back(detail::map_key(s.options.key_prefix, k));
  std::vector<std::string_view> views(keys.begin(), keys.end());
  if (views.empty()) return true;
  try {
    s.backend->remove_multi(views);
    return true;
  } catch (const std::exception& e) {
    s.report(ErrorKind::backend, "remove_multi", user_keys.front(), e.what());
    return false;
  }
}

// get_or_create for many keys. The shape of get_or_create_bytes, batched:
//   1. one multi-get for every distinct key;
//   2. in sorted key order, each key that is not fresh joins its flight and,
//      if it leads, tries its lock once: won -> "own"; held elsewhere ->
//      serve stale, or "remote" when there is no value; followers "follow";
//   3. owned keys are re-read (one multi-get), then created by one creator
//      call, stored, unlocked and published;
//   4. remote keys are polled (one multi-get per poll) until their values
//      appear or their locks free up (then created as in 3);
//   5. followed keys are waited for.
// Every lead is completed before any follower waits, so two multi calls with
// overlapping keys cannot wait on each other.
void CacheRegion::get_or_create_multi_bytes(std::span<const std::string_view> user_keys,
                                            DecodeAt decode, CreateAt create, EncodeAt encode) {
  State& s = *state_;
  const std::size_t n = user_keys.size();
  if (n == 0) return;

  enum class Task { done, own, remote, follow };
  struct Group {
    std::string key;
    std::size_t first = 0;            // the index whose slot receives the value
    std::vector<std::size_t> copies;  // other indices with the same key
    Found found = Found::missing;
    std::shared_ptr<Item> item;
    std::optional<Lead> lead;
    std::shared_ptr<detail::Flight> follow;
    std::unique_ptr<DistributedLock> lock;
    bool locked = false;
    Task task = Task::done;
  };

  std::vector<std::string> mapped;
  mapped.reserve(n);
  for (auto k : user_keys) mapped.push_back(detail::map_key(s.options.key_prefix, k));
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return mapped[a] < mapped[b]; });
  std::vector<Group> groups;
  for (auto i : order) {
    if (!groups.empty() && groups.back().key == mapped[i]) {
      groups.back().copies.push_back(i);
    } else {
      Group& g = groups.emplace_back();
      g.key = std::move(mapped[i]);
      g.first = i;
    }
  }
  auto user_key = [&](const Group& g) { return user_keys[g.first]; };
  auto decoder = [&](const Group& g) {
    return [&decode, i = g.first](std::string_view payload) { return decode(i, payload); };
  };
  // One multi-get for `batch`; nullopt (reported) if the backend failed.
  auto fetch =
      [&](const std::vector<Group*>& batch) -> std::optional<std::vector<std::optional<Item>>> {
    std::vector<std::string_view> views;
    views.reserve(batch.size());
    for (Group* g : batch) views.push_back(g->key);
    try {
      auto items = s.backend->get_multi(views);
      items.resize(batch.size());
      return items;
    } catch (const std::exception& e) {
      s.report(ErrorKind::backend, "get_multi", user_key(*batch.front()), e.what());
      return std::nullopt;
    }
  };
  // Completes `g`'s flight with a value that someone else stored.
  auto found_elsewhere = [&](Group& g, Found found, std::shared_ptr<Item> item) {
    if (g.locked) s.release(*g.lock, user_key(g));
    g.lead->publish(std::move(item));
    g.task = Task::done;
    if (found == Found::fresh) {
      State::count(g.found == Found::stale ? s.counters.hits : s.counters.waited);
    } else {
      State::count(s.counters.stale_served);
    }
  };

  // 1.
  std::vector<Group*> all;
  for (auto& g : groups) all.push_back(&g);
  auto items = fetch(all);
  bool degraded = !items;
  for (std::size_t j = 0; j < groups.size(); ++j) {
    Group& g = groups[j];
    if (degraded) {
      g.found = Found::error;
    } else if ((*items)[j]) {
      g.found = s.examine(*(*items)[j], user_key(g), decoder(g));
      if (g.found != Found::missing) g.item = std::make_shared<Item>(std::move(*(*items)[j]));
    }
  }

  // 2.
  for (auto& g : groups) {
    if (g.found == Found::fresh) {
      State::count(s.counters.hits);
      continue;
    }
    if (g.found == Found::stale) {
      if (auto lead = s.flights.try_lead(g.key)) g.lead.emplace(std::move(*lead));
      if (!g.lead) {
        State::count(s.counters.stale_served);
        continue;
      }
    } else {
      State::count(s.counters.misses);
      auto [flight, lead] = s.flights.join(g.key);
      if (!lead) {
        g.follow = std::move(flight);
        g.task = Task::follow;
        State::count(s.counters.lock_waits);
        continue;
      }
      g.lead.emplace(std::move(*lead));
    }
    g.task = Task::own;
    if (degraded) continue;
    g.lock = s.make_lock(g.key);
    const auto taken = s.try_lock(*g.lock, user_key(g));
    if (!taken) {
      degraded = true;
    } else if (*taken) {
      g.locked = true;
    } else if (g.found == Found::stale) {
      g.lead->publish(std::move(g.item));
      g.task = Task::done;
      State::count(s.counters.stale_served);
    } else {
      g.task = Task::remote;
      State::count(s.counters.lock_waits);
    }
  }

  // 3.
  auto create_owned = [&](std::vector<Group*> own) {
    std::vector<Group*> locked;
    for (Group* g : own) {
      if (g->locked) locked.push_back(g);
    }
    if (!locked.empty()) {
      if (auto again = fetch(locked)) {
        for (std::size_t j = 0; j < locked.size(); ++j) {
          Group& g = *locked[j];
          if (!(*again)[j]) continue;
          if (s.examine(*(*again)[j], user_key(g), decoder(g), /*quiet=*/true) == Found::fresh) {
            found_elsewhere(g, Found::fresh, std::make_shared<Item>(std::move(*(*again)[j])));
          }
        }
      }
      std::erase_if(own, [](Group* g) { return g->task == Task::done; });
    }
    if (own.empty()) return;
    std::vector<std::size_t> indices;
    std::vector<LockKeeper::Ticket> tickets;
    for (Group* g : own) {
      indices.push_back(g->first);
      if (g->locked) tickets.push_back(s.keep_alive(g->lock.get(), user_key(*g)));
    }
    const auto started = SteadyClock::now();
    try {
      create(indices);
    } catch (...) {
      tickets.clear();
      const auto error = std::current_exception();
      for (Group* g : own) {
        if (g->locked) s.release(*g->lock, user_key(*g));
        g->lead->fail(error);
        g->task = Task::done;
      }
      State::count(s.counters.creation_errors);
      throw;
    }
    tickets.clear();
    const auto took =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - started);
    std::vector<std::shared_ptr<Item>> built;
    std::vector<KeyedItem> batch;
    for (Group* g : own) {
      built.push_back(s.build_item(
          user_key(*g), [&](std::string& out) { encode(g->first, out); }, took));
      if (built.back()) batch.push_back(KeyedItem{g->key, built.back().get()});
    }
    if (!batch.empty()) {
      try {
        s.backend->set_multi(batch, s.item_ttl);
      } catch (const std::exception& e) {
        s.report(ErrorKind::backend, "set_multi", user_key(*own.front()), e.what());
      }
    }
    for (std::size_t j = 0; j < own.size(); ++j) {
      Group& g = *own[j];
      if (g.locked) s.release(*g.lock, user_key(g));
      State::count(s.counters.created);
      if (!g.locked) State::count(s.counters.degraded);
      if (built[j]) g.lead->publish(std::move(built[j]));
      g.lead.reset();  // abandoned if it could not be built: followers retry
      g.task = Task::done;
    }
  };
  std::vector<Group*> own, remote;
  for (auto& g : groups) {
    if (g.task == Task::own) own.push_back(&g);
    if (g.task == Task::remote) remote.push_back(&g);
  }
  create_owned(std::move(own));

  // 4.
  const auto waiting_since = SteadyClock::now();
  Duration pause = s.options.wait.first_poll;
  while (!remote.empty()) {
    std::this_thread::sleep_for(jittered(pause));
    pause = std::min(pause * 2, s.options.wait.max_poll);
    auto polled = fetch(remote);
    if (!polled) {
      create_owned(std::move(remote));
      break;
    }
    const bool out_of_time =
        s.options.wait.max_wait && SteadyClock::now() - waiting_since >= *s.options.wait.max_wait;
    std::vector<Group*> still, ready;
    for (std::size_t j = 0; j < remote.size(); ++j) {
      Group& g = *remote[j];
      if ((*polled)[j]) {
        const Found found = s.examine(*(*polled)[j], user_key(g), decoder(g), /*quiet=*/true);
        if (found != Found::missing) {
          found_elsewhere(g, found, std::make_shared<Item>(std::move(*(*polled)[j])));
          continue;
        }
      }
      const auto taken = s.try_lock(*g.lock, user_key(g));
      if (taken && *taken) g.locked = true;
      if (!taken || *taken) {
        ready.push_back(&g);
      } else if (out_of_time) {
        s.report(ErrorKind::lock, "wait", user_key(g),
                 "gave up waiting for the lock holder; creating here");
        ready.push_back(&g);
      } else {
        still.push_back(&g);
      }
    }
    create_owned(std::move(ready));
    remote = std::move(still);
  }

  // 5.
  for (auto& g : groups) {
    if (g.task != Task::follow) continue;
    const auto result = g.follow->wait();
    if (result.error) std::rethrow_exception(result.error);
    if (result.item) {
      const Found found = s.examine(*result.item, user_key(g), decoder(g));
      if (found != Found::missing) {
        State::count(found == Found::fresh ? s.counters.waited : s.counters.stale_served);
        continue;
      }
    }
    // The leader gave up: this key alone, the single-key way.
    get_or_create_bytes(user_key(g), decoder(g), [&](std::string& out) {
      const std::size_t only[] = {g.first};
      create(only);
      encode(g.first, out);
    });
  }

  // Keys given more than once share their first index's value.
  for (auto& g : groups) {
    if (g.copies.empty()) continue;
    std::string bytes;
    encode(g.first, bytes);
    for (auto c : g.copies) decode(c, bytes);
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
  return RegionStats{load(c.hits),          load(c.misses),     load(c.stale_served),
                     load(c.waited),        load(c.created),    load(c.creation_errors),
                     load(c.lock_waits),    load(c.degraded),   load(c.backend_errors),
                     load(c.decode_errors), load(c.lock_errors)};
}

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
