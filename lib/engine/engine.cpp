// The dogpile step, written once (docs/engine.md):
//
//   read -> judge -> flight -> lease -> confirm -> create -> store -> release
//        -> publish -> wait -> account
//
// A call is a batch of slots, one per distinct key; each step does its I/O
// for the whole batch. get_or_create is a batch of one (on the stack, with a
// fast path for a fresh hit), get_or_create_multi and cached_multi a batch of
// many, and a background job runs the create..publish part for the slots a
// caller handed it.
#include "engine/engine.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <utility>

#include "dogpile/executor.hpp"
#include "engine/poll_schedule.hpp"
#include "format/keys.hpp"
#include "transport/deadline.hpp"

namespace dogpile {

using detail::Found;
using detail::Served;
using detail::Slot;

namespace {

// How long a caller remembers that a key's lock is held elsewhere: about as
// long as the last creation took, within these bounds.
constexpr Duration kMinHold = std::chrono::milliseconds(100);

std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
  }
  return "the creator threw";
}

// A buffer to decompress values into, this thread's own, reused from read
// to read: a new one per read costs an allocation and, for large values,
// its page faults. A nested use (a codec that reads a region) gets its own;
// a buffer grown past 1 MiB is given back.
class Scratch {
 public:
  Scratch() : buffer_(in_use_ ? &own_ : &shared_) { in_use_ = true; }
  ~Scratch() {
    if (buffer_ != &shared_) return;
    in_use_ = false;
    if (shared_.capacity() > kKeep) std::string().swap(shared_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string& get() noexcept { return *buffer_; }

 private:
  static constexpr std::size_t kKeep = std::size_t{1} << 20;
  static thread_local std::string shared_;
  static thread_local bool in_use_;
  std::string own_;
  std::string* buffer_;
};
thread_local std::string Scratch::shared_;
thread_local bool Scratch::in_use_ = false;

template <class D>
std::string format_duration(D d) {
  return fmt::format("{}", std::chrono::duration_cast<std::chrono::milliseconds>(d));
}

}  // namespace

// What one call (or one background job) carries through the step.
struct CacheRegion::Engine::Context {
  const Call* call = nullptr;  // null for a background job: no caller to decode for
  Expiration expiration;
  Ttl ttl{};  // of the items it stores
  SteadyTime deadline = SteadyTime::max();
  std::stop_token stop;
  LeaseRequest read_request;  // what a read may claim (the meta protocol grants it there)
  bool allow_early = true;

  bool decode(std::size_t index, std::string_view payload) const {
    return call == nullptr || call->decode(index, payload);
  }
};

// A background regeneration: the slots a caller handed over (their flights
// and locks with them), and an owning copy of the creation.
struct CacheRegion::Engine::Job {
  enum State { queued, running, done, abandoned };

  Engine* engine = nullptr;
  std::vector<std::string> user_keys;  // owned: the slots view them
  std::vector<Slot> slots;
  detail::BackgroundCreate make;
  Context ctx;
  std::atomic<int> state{queued};

  ~Job() {
    // Dropped by the executor without running: give the locks back.
    int expected = queued;
    if (state.compare_exchange_strong(expected, abandoned)) engine->abandon_job(*this);
  }
};

// ---------------------------------------------------------------------------
// Construction

CacheRegion::Engine::Engine(std::shared_ptr<Backend> backend, RegionOptions options)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : system_clock()),
      reporter_(options_.on_error, counters_),
      metrics_(clock_, options_.observer),
      judge_(options_),
      invalidations_(*backend_, options_.key_prefix + "#inv", options_.invalidation_check, clock_,
                     reporter_, counters_, &metrics_),
      fleet_(clock_, *backend_, invalidations_.key(), options_.clock_sync, &metrics_),
      kept_(options_.degraded_entries, options_.degraded_bytes),
      local_(options_.local ? options_.local->max_entries : 0,
             options_.local ? options_.local->max_bytes : 0),
      executor_(
          options_.background_refresh
              ? (options_.executor ? options_.executor : std::make_shared<ThreadPoolExecutor>())
              : nullptr),
      keeper_(
          clock_,
          [this](const std::string& key, detail::LockKeeper::Event event,
                 const std::exception* error) {
            switch (event) {
              case detail::LockKeeper::Event::lost:
                reporter_.report(ErrorKind::lock, "extend lock", key,
                                 "the lock was lost (evicted, flushed, or expired and taken "
                                 "over) while its creator ran; its store stays fenced, so no "
                                 "older value lands over a newer one");
                break;
              case detail::LockKeeper::Event::failed:
                reporter_.report(ErrorKind::backend, "extend lock", key, *error);
                break;
              case detail::LockKeeper::Event::hung:
                detail::Counters::add(counters_.hung_creations);
                reporter_.report(
                    ErrorKind::lock, "create", key,
                    fmt::format("the creator has run longer than max_creation ({}); its "
                                "lock is no longer extended, and this process's callers "
                                "waiting on it start over",
                                format_duration(*options_.max_creation)));
                break;
            }
          },
          &metrics_),
      registration_(*this) {}

CacheRegion::Engine::~Engine() {
  registration_.reset();
  // Jobs not started are abandoned (their locks released, their flights
  // given up); running ones are waited for.
  std::vector<std::shared_ptr<Job>> queued;
  std::unique_lock lock(jobs_mutex_);
  for (auto& [raw, weak] : jobs_) {
    auto job = weak.lock();
    int expected = Job::queued;
    if (job && job->state.compare_exchange_strong(expected, Job::abandoned)) {
      queued.push_back(std::move(job));
    }
  }
  lock.unlock();
  for (auto& job : queued) abandon_job(*job);
  queued.clear();
  // A job leaves the list when it ends, however it ends.
  lock.lock();
  jobs_done_.wait(lock, [&] { return jobs_.empty(); });
}

void CacheRegion::Engine::after_fork_in_child() noexcept {
  // The parent's flights, jobs, lock memory and handler lock stay behind;
  // the keeper and the executor reset themselves.
  flights_.reset_after_fork();
  held_.reset_after_fork();
  reporter_.reset_after_fork();
  fleet_.reset_after_fork();
  judge_.reseed_after_fork();
  kept_.after_fork_in_child();
  local_.after_fork_in_child();
  new (&jobs_mutex_) std::mutex;
  new (&jobs_done_) std::condition_variable;
  new (&jobs_) std::vector<std::pair<Job*, std::weak_ptr<Job>>>();
  chores_scheduled_.store(false, std::memory_order_relaxed);
}

// Before a call: the fleet clock measured once, the invalidation record read
// if due, the background chore running.
void CacheRegion::Engine::prepare() {
  fleet_.ensure_measured();
  invalidations_.check();
  if (!chores_scheduled_.load(std::memory_order_relaxed)) schedule_chores();
}

void CacheRegion::Engine::schedule_chores() {
  if (chores_scheduled_.exchange(true)) return;
  if (const auto first = fleet_.next_delay()) {
    keeper_.schedule(*first, [this] {
      std::string error;
      if (!fleet_.sample(&error) && !error.empty()) {
        reporter_.report(ErrorKind::backend, "measure clock", invalidations_.key(),
                         error +
                             " (every clock_sync, a region measures this host's clock "
                             "against the server's, so that hosts judge ages alike; until "
                             "it can, it keeps the last measure)");
      }
      return fleet_.next_delay();
    });
  }
}

// ---------------------------------------------------------------------------
// run: the whole step for one call

Outcome CacheRegion::Engine::run(const Call& call) {
  // Every call is timed, and recorded by how it ended (an exception: failed).
  struct Timed {
    detail::Metrics& metrics;
    const Call& call;
    SteadyTime started;
    std::optional<Outcome> outcome;  // none: it threw
    ~Timed() {
      metrics.call(outcome, call.keys.empty() ? std::string_view() : call.keys.front(),
                   call.keys.size(), metrics.now() - started);
    }
  } timed{metrics_, call, metrics_.now(), std::nullopt};
  const Outcome outcome = run_keys(call);
  timed.outcome = outcome;
  return outcome;
}

Outcome CacheRegion::Engine::run_keys(const Call& call) {
  Context ctx;
  ctx.call = &call;
  ctx.expiration = call.options.expiration ? *call.options.expiration : options_.expiration;
  ctx.ttl = judge_.ttl_for(ctx.expiration);
  const auto deadline =
      call.options.deadline
          ? std::optional<Deadline>(*call.options.deadline)
          : (options_.deadline ? std::optional<Deadline>(*options_.deadline) : std::nullopt);
  if (deadline) ctx.deadline = deadline->on(clock_);
  ctx.stop = call.options.stop;
  ctx.read_request.claim_if_missing = true;
  if (ctx.expiration) {
    ctx.read_request.claim_if_ttl_below = std::chrono::ceil<Ttl>(options_.stale_grace);
  }
  ctx.read_request.ttl = options_.lock_timeout;
  // Backends bound each request by the deadline, on the real steady clock.
  std::optional<detail::Steady::time_point> request_deadline;
  if (deadline) request_deadline = detail::Steady::now() + (ctx.deadline - clock_.steady_now());
  detail::DeadlineScope scope(request_deadline);
  prepare();

  if (call.keys.size() == 1) {
    Slot slot;
    slot.user_key = call.keys[0];
    slot.key = detail::map_key(options_.key_prefix, slot.user_key);
    slot.check = detail::key_check(slot.key);
    slot.bind();
    if (local_.enabled() && serve_local(ctx, slot)) return account(slot);  // no request
    read_one(ctx, slot);
    if (slot.found == Found::fresh && !slot.lease.lock) {  // the hot path: one request
      detail::Counters::add(counters_.hits);
      return Outcome::fresh;
    }
    std::array<Slot*, 1> one{&slot};
    step(ctx, {one.begin(), one.end()});
    return account(slot);
  }

  // Many keys: one slot per distinct backend key, in key order (locks are
  // taken in that order, so two calls over overlapping keys cannot deadlock).
  std::vector<std::pair<std::string, std::size_t>> mapped;
  mapped.reserve(call.keys.size());
  for (std::size_t i = 0; i < call.keys.size(); ++i) {
    mapped.emplace_back(detail::map_key(options_.key_prefix, call.keys[i]), i);
  }
  std::stable_sort(mapped.begin(), mapped.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Slot> slots;
  slots.reserve(mapped.size());
  for (auto& [key, index] : mapped) {
    if (!slots.empty() && slots.back().key == key) {
      slots.back().copies.push_back(index);
      continue;
    }
    Slot& s = slots.emplace_back();
    s.user_key = call.keys[index];
    s.key = std::move(key);
    s.check = detail::key_check(s.key);
    s.index = index;
  }
  std::vector<Slot*> all;
  all.reserve(slots.size());
  for (auto& s : slots) {
    s.bind();
    if (local_.enabled() && serve_local(ctx, s)) continue;
    all.push_back(&s);
  }
  if (!all.empty()) {
    read(ctx, all);
    step(ctx, all);
  }
  auto costliest = Outcome::fresh;  // the call counts as its costliest key
  for (auto& s : slots) {
    costliest = std::max(costliest, account(s));
    if (s.copies.empty()) continue;
    // Keys given more than once share one value.
    std::string_view payload;
    Scratch scratch;
    const Item* item = s.made ? s.made.get() : s.at_hand.get();
    if (item != nullptr) {
      if (auto env = detail::decode_envelope(item->data, item->flags, s.check).envelope) {
        payload = payload_of(*env, scratch.get()).value_or(std::string_view());
      }
    }
    for (auto c : s.copies) call.decode(c, payload);
  }
  return costliest;
}

// The step for slots whose first read is done.
void CacheRegion::Engine::step(Context& ctx, std::vector<Slot*> pending) {
  bool first = true;
  while (!pending.empty()) {
    if (!first) {  // slots starting over: their flight was given up
      if (pending.size() == 1) {
        read_one(ctx, *pending.front());
      } else {
        read(ctx, pending);
      }
    }
    first = false;
    std::vector<Slot*> leaders, followers, won, remote, restart;
    join_flights(ctx, pending, leaders, followers);
    // A lease granted in the read to a caller that will not create (the
    // value was fresh, or another caller here leads): given back at once.
    std::vector<Slot*> needless;
    for (Slot* s : pending) {
      if (s->lease.lock && !s->lead) needless.push_back(s);
    }
    release(needless);
    take_leases(ctx, leaders, won, remote);
    confirm(ctx, won);
    hand_to_background(ctx, won);
    // Create what this caller holds the lease for, and what it must create
    // without one (the backend is failing).
    std::vector<Slot*> to_create;
    for (Slot* s : leaders) {
      if (s->served == Served::none && (s->lease.lock || s->degraded)) to_create.push_back(s);
    }
    if (!to_create.empty()) {
      create_for_call(ctx, to_create);
    }
    wait_for_others(ctx, remote);
    follow(ctx, followers, restart);
    pending = std::move(restart);
  }
}

// ---------------------------------------------------------------------------
// read and judge

template <class DecodeFn>
Found CacheRegion::Engine::examine(const Context& ctx, Slot& slot, std::string_view data,
                                   std::uint32_t flags, bool quiet, DecodeFn&& decode) {
  const auto result = detail::decode_envelope(data, flags, slot.check);
  if (!result.envelope) {
    // An empty item with no flags is a meta-protocol lease placeholder
    // (another client's creation in progress): a miss, not an error.
    const bool placeholder = data.empty() && flags == 0;
    if (!quiet && !placeholder) {
      reporter_.report(ErrorKind::decode, "decode", slot.user_key, detail::to_string(result.error),
                       {}, detail::code_of(result.error));
    }
    return Found::missing;
  }
  const auto& envelope = *result.envelope;
  if (envelope.creation_duration > std::chrono::microseconds::zero()) {
    slot.history = envelope.creation_duration;
  }
  if (envelope.kind == detail::EnvelopeKind::tombstone) return Found::missing;
  Found found = judge_.judge(envelope, fleet_.latest(), ctx.expiration, invalidations_.current(),
                             ctx.allow_early);
  if (found == Found::missing) return found;
  // Marked stale (a per-key soft invalidation), whatever its age: in the
  // envelope, or by the backend (memcached meta: the item's stale bit).
  const bool marked = envelope.kind == detail::EnvelopeKind::stale || slot.lease.marked_stale;
  if (marked && found != Found::stale) found = Found::stale;
  Scratch scratch;
  detail::EnvelopeError error{};
  const auto payload =
      detail::payload_bytes(envelope, scratch.get(), options_.compression.max_size, error);
  if (!payload) {
    if (!quiet)
      reporter_.report(ErrorKind::decode, "decode", slot.user_key, detail::to_string(error), {},
                       detail::code_of(error));
    return Found::missing;
  }
  if (!decode(*payload)) {
    if (!quiet) {
      reporter_.report(ErrorKind::decode, "decode", slot.user_key,
                       "the stored value does not decode as the requested type", {}, "codec");
    }
    return Found::missing;
  }
  slot.created_at = envelope.created_at;
  slot.took = envelope.creation_duration;
  return found;
}

Found CacheRegion::Engine::examine_item(Context& ctx, Slot& slot, const Item& item, bool quiet) {
  const Found found =
      examine(ctx, slot, item.data, item.flags, quiet,
              [&](std::string_view payload) { return ctx.decode(slot.index, payload); });
  slot.value_is_at_hand = false;  // the value slot now holds this item's value, or nothing
  return found;
}

// The hot path's read: one request; the bytes are kept only if the value is
// not fresh (a stale value may be served, or handed to followers).
void CacheRegion::Engine::read_one(Context& ctx, Slot& slot) {
  slot.at_hand.reset();
  slot.read_failed = false;
  try {
    Duration decoding{};  // in the visitor: not the request's time
    const bool there = metrics_.backend(
        BackendOp::get, slot.user_key, 1,
        [&] {
          return backend_->read_view(
              slot.lease, ctx.read_request, [&](std::string_view data, std::uint32_t flags) {
                const detail::Stopwatch watch(metrics_, decoding);
                slot.found = examine(ctx, slot, data, flags, false, [&](std::string_view payload) {
                  return ctx.decode(slot.index, payload);
                });
                if (detail::usable(slot.found) && slot.found != Found::fresh) {
                  slot.at_hand = std::make_shared<const Item>(Item{std::string(data), flags});
                  slot.value_is_at_hand = true;
                } else if (slot.found == Found::fresh && local_.enabled()) {
                  fill_local(slot, std::make_shared<const Item>(Item{std::string(data), flags}));
                }
                if (!kept_.empty()) {
                  note_read(ctx, slot.key,
                            !detail::usable(slot.found) ? nullptr
                            : slot.at_hand
                                ? slot.at_hand
                                : std::make_shared<const Item>(Item{std::string(data), flags}));
                }
              });
        },
        &decoding);
    if (!there) {
      slot.found = Found::missing;
      if (!kept_.empty()) note_read(ctx, slot.key, nullptr);
    }
    if (slot.lease.lease == LeaseState::won) slot.confirmed = true;  // granted in the read
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "get", slot.user_key, e);
    read_failed(ctx, slot);
  }
}

void CacheRegion::Engine::note_read(const Context& ctx, std::string_view key,
                                    std::shared_ptr<const Item> item) {
  if (kept_.empty()) return;
  kept_.update(key, std::move(item), kept_until(ctx));
}

SteadyTime CacheRegion::Engine::kept_until(const Context& ctx) const noexcept {
  return clock_.steady_now() + std::chrono::duration_cast<SteadyTime::duration>(
                                   ctx.expiration ? *ctx.expiration + options_.stale_grace
                                                  : Duration(std::chrono::hours(24)));
}

// The backend could not be read for `slot`: what this process kept for it
// while the backend failed (degraded mode) is judged as a stored value
// would be; without one, the slot is a miss. Either way it is created, if it
// must be, without asking the backend for a lock.
void CacheRegion::Engine::read_failed(Context& ctx, Slot& slot, bool count) {
  slot.read_failed = true;
  slot.found = Found::error;
  slot.at_hand.reset();
  slot.value_is_at_hand = false;
  const auto kept = kept_.get(slot.key, clock_.steady_now());
  if (!kept) return;
  const Found found = examine_item(ctx, slot, *kept, true);
  if (!detail::usable(found)) return;
  slot.found = found;
  slot.at_hand = kept;
  slot.value_is_at_hand = true;
  if (count) detail::Counters::add(counters_.kept_served);
}

// The local tier: a value this process read, made or wrote lately is served
// with no request while it is fresh by its envelope and younger than the
// tier's time to live. The writes counted before the slot's read fence its
// fill (a set or remove that landed meanwhile wins).
bool CacheRegion::Engine::serve_local(Context& ctx, Slot& slot) {
  slot.local_writes = local_.writes(slot.key);
  auto item = local_.get(slot.key, clock_.steady_now());
  if (!item) return false;
  if (examine_item(ctx, slot, *item, true) != Found::fresh) {
    local_.discard(slot.key, item.get());  // the read that follows may fill a newer one
    return false;
  }
  slot.found = Found::fresh;
  slot.served = Served::local;
  slot.at_hand = std::move(item);
  slot.value_is_at_hand = true;
  return true;
}

void CacheRegion::Engine::fill_local(const Slot& slot, std::shared_ptr<const Item> item) {
  if (!local_.enabled()) return;
  const SteadyTime now = clock_.steady_now();
  local_.put_read(slot.key, std::move(item), now, now + local_ttl(), slot.local_writes);
}

// Forgets keys in the local tier when it leaves scope: after the backend's
// write, however that ended. Every write of this process (set, remove,
// invalidate, and their multi forms) forgets rather than puts its value:
// two writes racing in this process then cannot leave the tier disagreeing
// with the order the backend saw; the next read fills it from the backend,
// and a fill that read before the write is fenced out.
class CacheRegion::Engine::LocalForget {
 public:
  explicit LocalForget(Engine& engine) : engine_(engine) {}
  LocalForget(const LocalForget&) = delete;
  LocalForget& operator=(const LocalForget&) = delete;
  ~LocalForget() {
    for (const auto& key : keys_) engine_.local_.erase(key);
  }
  void add(std::string key) {
    if (engine_.local_.enabled()) keys_.push_back(std::move(key));
  }

 private:
  Engine& engine_;
  std::vector<std::string> keys_;
};

RegionStats CacheRegion::Engine::stats() const noexcept {
  RegionStats s = counters_.snapshot();
  s.local_entries = local_.entries();
  s.local_bytes = local_.bytes();
  return s;
}

template <class Op>
void CacheRegion::Engine::with_leases(BackendOp what, std::span<Slot* const> slots, Op op) {
  std::vector<LeaseSlot> leases;
  leases.reserve(slots.size());
  for (Slot* s : slots) leases.push_back(std::move(s->lease));
  struct Restore {
    std::span<Slot* const> slots;
    std::vector<LeaseSlot>& leases;
    ~Restore() {
      for (std::size_t i = 0; i < slots.size(); ++i) {
        slots[i]->lease = std::move(leases[i]);
        slots[i]->bind();
      }
    }
  } restore{slots, leases};
  metrics_.backend(what, slots.front()->user_key, slots.size(),
                   [&] { op(std::span<LeaseSlot>(leases)); });
}

void CacheRegion::Engine::read(Context& ctx, std::span<Slot* const> slots) {
  for (Slot* s : slots) s->read_failed = false;
  try {
    with_leases(BackendOp::get, slots,
                [&](std::span<LeaseSlot> leases) { backend_->read(leases, ctx.read_request); });
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "get_multi", slots.front()->user_key, e);
    for (Slot* s : slots) read_failed(ctx, *s);
    return;
  }
  for (Slot* s : slots) {
    s->at_hand.reset();
    s->found = Found::missing;
    if (s->lease.item) {
      s->found = examine_item(ctx, *s, *s->lease.item, false);
      if (detail::usable(s->found)) {
        s->at_hand = std::make_shared<const Item>(std::move(*s->lease.item));
        s->value_is_at_hand = true;
        if (s->found == Found::fresh) fill_local(*s, s->at_hand);
      }
      s->lease.item.reset();
    }
    if (!kept_.empty()) note_read(ctx, s->key, detail::usable(s->found) ? s->at_hand : nullptr);
    if (s->lease.lease == LeaseState::won) s->confirmed = true;
  }
}

// ---------------------------------------------------------------------------
// flight: this process's callers of a key share one leader

void CacheRegion::Engine::join_flights(Context&, std::span<Slot* const> slots,
                                       std::vector<Slot*>& leaders, std::vector<Slot*>& followers) {
  for (Slot* s : slots) {
    switch (s->found) {
      case Found::fresh:
        s->served = Served::fresh;
        break;
      case Found::early:
      case Found::stale:
        // Someone in this process is regenerating it already: serve what we have.
        if (auto lead = flights_.try_lead(s->key)) {
          s->lead.emplace(std::move(*lead));
          if (s->found == Found::early) detail::Counters::add(counters_.early_recomputes);
          leaders.push_back(s);
        } else {
          s->served = s->found == Found::early ? Served::fresh : Served::stale;
        }
        break;
      case Found::missing:
      case Found::error: {
        if (!s->counted_miss) {
          detail::Counters::add(counters_.misses);
          s->counted_miss = true;
        }
        auto [flight, lead] = flights_.join(s->key);
        if (lead) {
          s->lead.emplace(std::move(*lead));
          leaders.push_back(s);
        } else {
          s->follow = std::move(flight);
          detail::Counters::add(counters_.lock_waits);
          followers.push_back(s);
        }
        break;
      }
    }
  }
}

// Serves the value this caller read (stale, or fresh but chosen for early
// recomputation) and hands it to the flight's followers.
void CacheRegion::Engine::serve_at_hand(Context& ctx, Slot& slot) {
  redecode_at_hand(ctx, slot);
  slot.lead->publish(slot.at_hand);
  slot.served = slot.found == Found::early ? Served::fresh : Served::stale;
}

void CacheRegion::Engine::redecode_at_hand(Context& ctx, Slot& slot) {
  if (slot.value_is_at_hand || ctx.call == nullptr || !slot.at_hand) return;
  const auto env = detail::decode_envelope(slot.at_hand->data, slot.at_hand->flags, slot.check);
  Scratch scratch;
  if (env.envelope) {
    if (auto payload = payload_of(*env.envelope, scratch.get())) ctx.decode(slot.index, *payload);
  }
  slot.value_is_at_hand = true;
}

// ---------------------------------------------------------------------------
// lease: one caller in the fleet regenerates

void CacheRegion::Engine::take_leases(Context& ctx, std::span<Slot* const> leaders,
                                      std::vector<Slot*>& won, std::vector<Slot*>& remote) {
  const SteadyTime now = clock_.steady_now();
  auto held_elsewhere = [&](Slot& s) {
    if (s.has_value()) {
      // Served stale; the process's next stale callers will not ask again
      // until the holder's creation is likely done.
      const auto hold = std::clamp<Duration>(s.took, kMinHold, options_.lock_timeout);
      held_.remember(s.key, now + std::chrono::duration_cast<SteadyTime::duration>(hold));
      serve_at_hand(ctx, s);
    } else {
      remote.push_back(&s);
    }
  };
  std::vector<Slot*> to_claim;
  for (Slot* s : leaders) {
    if (s->found == Found::error || s->read_failed) {
      // The read failed: the server is likely down, skip the lock. As a
      // lease's confirm reads again, look again at what this process kept:
      // another caller may have kept a new value between this caller's look
      // and its lead. That value is served, not made again.
      const Found first_found = s->found;
      auto first_at_hand = s->at_hand;
      read_failed(ctx, *s, false);
      if (s->found == Found::fresh) {
        if (!detail::usable(first_found)) detail::Counters::add(counters_.kept_served);
        s->lead->publish(s->at_hand);
        s->served = Served::fresh;
        continue;
      }
      if (!s->has_value() && first_at_hand && detail::usable(first_found)) {
        // Evicted meanwhile: the stale value first found is still at hand.
        s->found = first_found;
        s->at_hand = std::move(first_at_hand);
        s->value_is_at_hand = false;
        redecode_at_hand(ctx, *s);
      }
      s->degraded = true;
    } else if (s->lease.lease == LeaseState::won) {
      won.push_back(s);  // granted in the read
    } else if (s->lease.lease == LeaseState::held) {
      held_elsewhere(*s);
    } else if (s->has_value() && held_.held(s->key, now)) {
      serve_at_hand(ctx, *s);
    } else {
      to_claim.push_back(s);
    }
  }
  claim(to_claim);
  for (Slot* s : to_claim) {
    if (s->degraded) continue;
    if (s->lease.lease == LeaseState::won) {
      held_.forget(s->key);
      won.push_back(s);
    } else {
      held_elsewhere(*s);
    }
  }
}

// Claims the slots' leases (classic: one `add` of the lock item per key, a
// pipeline per server; the item tells waiters when this creation started,
// how long the last one took, and how far this host's clock may be off):
// the slots whose last creation took as long in one request. A slot whose
// lease the backend could not give is degraded.
void CacheRegion::Engine::claim(std::span<Slot* const> slots) {
  std::vector<Slot*> sorted(slots.begin(), slots.end());
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Slot* a, const Slot* b) { return a->history < b->history; });
  const TimePoint started = fleet_.now();
  for (std::size_t first = 0; first < sorted.size();) {
    std::size_t end = first + 1;
    while (end < sorted.size() && sorted[end]->history == sorted[first]->history) ++end;
    const std::span<Slot* const> group(sorted.data() + first, end - first);
    LeaseRequest request;
    request.ttl = options_.lock_timeout;
    request.info = LockInfo{started, group.front()->history, fleet_.error()};
    try {
      with_leases(BackendOp::lease, group,
                  [&](std::span<LeaseSlot> leases) { backend_->claim(leases, request); });
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      reporter_.report(ErrorKind::backend, "lock", group.front()->user_key, e);
      // What was won before the failure is kept; the rest goes without.
      for (Slot* s : group) {
        if (s->lease.lease != LeaseState::won || !s->lease.lock) s->degraded = true;
      }
    }
    first = end;
  }
}

// ---------------------------------------------------------------------------
// confirm: under the lease, read again — someone may have stored meanwhile

void CacheRegion::Engine::confirm(Context& ctx, std::vector<Slot*>& won) {
  std::vector<Slot*> unconfirmed, read_with_lease;
  for (Slot* s : won) {
    if (s->confirmed) continue;
    // The claim read the item with the lease: its answer is examined as a
    // confirmation's, without asking again.
    (s->lease.confirmed ? read_with_lease : unconfirmed).push_back(s);
  }
  if (!unconfirmed.empty()) {
    try {
      with_leases(BackendOp::confirm, unconfirmed,
                  [&](std::span<LeaseSlot> leases) { backend_->confirm(leases); });
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      reporter_.report(ErrorKind::backend, "get", unconfirmed.front()->user_key, e);
      // The lock is held: create, and store only into an empty key.
      for (Slot* s : unconfirmed) s->lease.fence = Fence{Fence::Kind::absent, 0};
      unconfirmed.clear();
    }
  }
  unconfirmed.insert(unconfirmed.end(), read_with_lease.begin(), read_with_lease.end());
  std::vector<Slot*> found_elsewhere;
  for (Slot* s : unconfirmed) {
    s->confirmed = true;
    if (!s->lease.item) continue;
    Item item = std::move(*s->lease.item);
    s->lease.item.reset();
    const TimePoint before = s->created_at;
    const bool had_value = s->has_value();
    const Found found = examine_item(ctx, *s, item, true);
    const bool newer = !had_value || s->created_at > before;
    if ((found == Found::fresh || found == Found::early) && newer) {
      s->at_hand = std::make_shared<const Item>(std::move(item));
      s->value_is_at_hand = true;
      s->served = had_value ? Served::fresh : Served::waited;
      found_elsewhere.push_back(s);
    } else if (had_value && detail::usable(found) && newer) {
      s->at_hand = std::make_shared<const Item>(std::move(item));  // a newer stale value
      s->found = found;
      s->value_is_at_hand = true;
    } else if (!detail::usable(found)) {
      s->created_at = before;  // examine did not keep this item
    }
  }
  if (found_elsewhere.empty()) return;
  release(found_elsewhere);
  for (Slot* s : found_elsewhere) s->lead->publish(s->at_hand);
  std::erase_if(won, [](const Slot* s) { return s->served != Served::none; });
}

// ---------------------------------------------------------------------------
// background: the stale winner returns the stale value; a job creates

void CacheRegion::Engine::hand_to_background(Context& ctx, std::vector<Slot*>& won) {
  if (ctx.call == nullptr || ctx.call->make_job == nullptr || !executor_) return;
  std::vector<Slot*> stale;
  for (Slot* s : won) {
    if (s->served == Served::none && s->has_value()) stale.push_back(s);
  }
  if (stale.empty()) return;
  detail::BackgroundCreate make = (*ctx.call->make_job)();
  if (!make) return;  // the creator cannot be copied: made here

  auto job = std::make_shared<Job>();
  job->engine = this;
  job->make = std::move(make);
  job->ctx.expiration = ctx.expiration;
  job->ctx.ttl = ctx.ttl;
  job->user_keys.reserve(stale.size());
  for (Slot* s : stale) job->user_keys.emplace_back(s->user_key);
  job->slots.resize(stale.size());
  for (std::size_t i = 0; i < stale.size(); ++i) {
    Slot& to = job->slots[i];
    Slot& from = *stale[i];
    to.user_key = job->user_keys[i];
    to.key = from.key;
    to.check = from.check;
    to.found = from.found;
    to.at_hand = from.at_hand;
    to.took = from.took;
    to.lead = std::move(from.lead);
    to.lease = std::move(from.lease);
    to.bind();
    from.bind();
  }
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.emplace_back(job.get(), job);
  }
  if (executor_->try_submit([job] {
        int expected = Job::queued;
        if (!job->state.compare_exchange_strong(expected, Job::running)) return;  // abandoned
        job->engine->run_job(*job);
      })) {
    for (Slot* s : stale) {
      s->served = s->found == Found::early ? Served::fresh : Served::stale;
      redecode_at_hand(ctx, *s);
      detail::Counters::add(counters_.background_refreshes);
    }
    std::erase_if(won, [](const Slot* s) { return s->served != Served::none; });
    return;
  }
  // Refused: the caller takes everything back and creates itself.
  {
    std::lock_guard lock(jobs_mutex_);
    std::erase_if(jobs_, [&](const auto& j) { return j.first == job.get(); });
  }
  for (std::size_t i = 0; i < stale.size(); ++i) {
    stale[i]->lead = std::move(job->slots[i].lead);
    stale[i]->lease = std::move(job->slots[i].lease);
    stale[i]->bind();
  }
  job->state = Job::done;
}

void CacheRegion::Engine::run_job(Job& job) noexcept {
  try {
    std::vector<Slot*> slots;
    for (auto& s : job.slots) slots.push_back(&s);
    create(
        job.ctx, slots,
        [&](std::span<Slot* const> made, std::span<detail::CreateOut> out) {
          std::vector<std::string_view> keys;
          for (const Slot* s : made) keys.push_back(s->user_key);
          job.make(keys, out);
        },
        true);
  } catch (...) {
    // create() reports a background creator's errors itself.
  }
  job.slots.clear();  // completes any flight left, before the engine may go
  job.state = Job::done;
  std::lock_guard lock(jobs_mutex_);
  std::erase_if(jobs_, [&](const auto& j) { return j.first == &job; });
  jobs_done_.notify_all();
}

void CacheRegion::Engine::abandon_job(Job& job) noexcept {
  std::vector<Slot*> slots;
  for (auto& s : job.slots) slots.push_back(&s);
  release(slots);
  job.slots.clear();  // the flights are abandoned: their followers start over
  std::lock_guard lock(jobs_mutex_);
  std::erase_if(jobs_, [&](const auto& j) { return j.first == &job; });
  jobs_done_.notify_all();
}

// ---------------------------------------------------------------------------
// create, store (fenced), release, publish

void CacheRegion::Engine::create(Context& ctx, std::span<Slot* const> slots, Creator creator,
                                 bool background) {
  std::vector<detail::CreateOut> out(slots.size());
  for (std::size_t j = 0; j < slots.size(); ++j) {
    Slot& s = *slots[j];
    s.made = std::make_shared<Item>();
    s.made->flags = detail::kEnvelopeFlags;
    detail::begin_envelope(s.made->data);
    out[j].bytes = &s.made->data;
  }
  // The keeper extends each lock while the creator runs; a creator that runs
  // past max_creation loses that, and its followers start over.
  std::vector<detail::LockKeeper::Ticket> tickets;
  for (Slot* s : slots) {
    if (!s->lease.lock) continue;
    std::function<void()> on_hung;
    if (s->lead) {
      on_hung = [this, key = s->key, flight = s->lead->flight()] { flights_.detach(key, flight); };
    }
    tickets.push_back(keeper_.keep(*s->lease.lock, std::string(s->user_key),
                                   detail::LockKeeper::interval_for(s->lease.lock->ttl()),
                                   options_.max_creation, std::move(on_hung)));
  }
  const TimePoint started = clock_.now();
  const SteadyTime started_steady = clock_.steady_now();  // for the metric: no clock steps
  try {
    creator(slots, out);
  } catch (...) {
    metrics_.creation(slots.front()->user_key, slots.size(), clock_.steady_now() - started_steady,
                      false, background);
    tickets.clear();
    release(slots);
    detail::Counters::add(counters_.creation_errors);
    const auto error = std::current_exception();
    bool all_served = true;
    for (Slot* s : slots) {
      s->made.reset();
      if ((background || options_.serve_stale_on_error) && s->has_value()) {
        if (!background) serve_at_hand(ctx, *s);
        if (background) s->lead->publish(s->at_hand);
        continue;
      }
      all_served = false;
      if (s->lead) s->lead->fail(error);
    }
    if (background || all_served) {
      reporter_.report(
          ErrorKind::creator, background ? "background create" : "create", slots.front()->user_key,
          what_of(error) + (background ? "; the stale value stays" : "; serving the stale value"));
      if (background || all_served) return;
    }
    throw;
  }
  tickets.clear();
  const Duration ran = clock_.now() - started;
  metrics_.creation(slots.front()->user_key, slots.size(), clock_.steady_now() - started_steady,
                    true, background);
  const auto took = std::max(std::chrono::microseconds::zero(),
                             std::chrono::duration_cast<std::chrono::microseconds>(ran));
  const TimePoint created_at = fleet_.earliest();
  std::vector<Slot*> to_store;
  for (std::size_t j = 0; j < slots.size(); ++j) {
    Slot& s = *slots[j];
    s.keep = out[j].keep;
    try {
      finish(s.made->data, created_at, took, s.check, detail::EnvelopeKind::value);
    } catch (const std::length_error& e) {
      reporter_.report(ErrorKind::backend, "set", s.user_key, e);
      s.made.reset();
      continue;
    }
    if (!s.keep) continue;
    // Without a lock (the backend failing) store only into an empty key.
    if (!s.lease.lock && !s.confirmed) s.lease.fence = Fence{Fence::Kind::absent, 0};
    s.lease.value = s.made.get();
    s.lease.ttl = ctx.ttl;
    s.lease.stored = false;
    to_store.push_back(&s);
  }
  bool store_failed = false;
  if (!to_store.empty()) {
    try {
      with_leases(BackendOp::store, to_store,
                  [&](std::span<LeaseSlot> leases) { backend_->store(leases); });
      for (Slot* s : to_store) {
        if (s->lease.stored) {
          fill_local(*s, s->made);
          continue;
        }
        detail::Counters::add(counters_.fenced_out);
        reporter_.report(ErrorKind::fenced, "set", s->user_key,
                         "the key was written (set, removed, or created elsewhere) while this "
                         "value was made; it was returned, not stored");
      }
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      reporter_.report(ErrorKind::backend, "set", to_store.front()->user_key, e);
      store_failed = true;
    }
    for (Slot* s : to_store) s->lease.value = nullptr;
  }
  // Degraded mode: what was made without the backend is kept in process, so
  // that this process's next callers of the key find it.
  // A value stored replaces a copy kept of its key; one fenced out (the key
  // was written meanwhile, with what this process does not know) drops it.
  const SteadyTime until = kept_until(ctx);
  for (Slot* s : to_store) {
    if (s->degraded || store_failed) {
      kept_.put_written(s->key, s->made, until);
    } else if (!kept_.empty()) {
      kept_.update(s->key, s->lease.stored ? s->made : nullptr, until);
    }
  }
  release(slots);
  for (Slot* s : slots) {
    held_.forget(s->key);
    detail::Counters::add(counters_.created);
    if (s->degraded) detail::Counters::add(counters_.degraded);
    if (s->lead) {
      if (s->made) {
        s->lead->publish(s->made);
      } else {
        s->lead->abandon();  // nothing to hand over: followers start over
      }
    }
    s->served = Served::created;
  }
}

// create() with the call's own creator, given the slots' value indices.
void CacheRegion::Engine::create_for_call(Context& ctx, std::span<Slot* const> slots) {
  create(
      ctx, slots,
      [&](std::span<Slot* const> made, std::span<detail::CreateOut> out) {
        std::vector<std::size_t> indices;
        indices.reserve(made.size());
        for (const Slot* s : made) indices.push_back(s->index);
        ctx.call->create(indices, out);
      },
      false);
}

void CacheRegion::Engine::release(std::span<Slot* const> slots) {
  std::vector<Slot*> held;
  for (Slot* s : slots) {
    if (s->lease.lock) held.push_back(s);
  }
  if (held.empty()) return;
  for (Slot* s : held) s->lease.lost = false;
  try {
    with_leases(BackendOp::release, held,
                [&](std::span<LeaseSlot> leases) { backend_->release(leases); });
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "release lock", held.front()->user_key, e,
                     "; tried again in the background");
  }
  std::vector<std::unique_ptr<DistributedLock>> unreleased;
  for (Slot* s : held) {
    if (s->lease.lost) {
      detail::Counters::add(counters_.locks_lost);
      reporter_.report(ErrorKind::lock, "release lock", s->user_key,
                       "the lock was gone before it was released (expired, evicted or flushed); "
                       "another caller may have created the value as well");
    }
    if (s->lease.lock && s->lease.lock->held()) unreleased.push_back(std::move(s->lease.lock));
    s->lease.lock.reset();
  }
  if (!unreleased.empty()) release_later(std::move(unreleased));
}

// Locks whose release failed (a server restarting, a connection that broke):
// tried again on the keeper thread every 100 ms for a second (a restarted
// server is usually back within its retry interval), then at doubling
// intervals up to 1 s, until released or until they would have expired
// anyway. Left alone, each would keep the key's next callers, here and
// elsewhere, waiting for lock_timeout. The keeper also extends live
// creators' locks, so a pass is short: each attempt is bounded by 250 ms
// and a pass by 500 ms; what is given up on (or left when the region goes)
// is abandoned without a request, to expire in the backend.
namespace {
struct Unreleased {
  std::vector<std::unique_ptr<DistributedLock>> locks;
  ~Unreleased() {
    for (auto& lock : locks) lock->abandon();
  }
};
}  // namespace

void CacheRegion::Engine::release_later(std::vector<std::unique_ptr<DistributedLock>> locks) {
  auto pending = std::make_shared<Unreleased>();
  pending->locks = std::move(locks);
  const SteadyTime give_up = clock_.steady_now() + options_.lock_timeout;
  constexpr auto kFirst = std::chrono::milliseconds(100);
  auto next = std::make_shared<Duration>(kFirst);
  auto tries = std::make_shared<int>(0);
  keeper_.schedule(kFirst, [this, pending, give_up, next, tries]() -> std::optional<Duration> {
    auto& locks = pending->locks;
    const auto pass_ends = detail::Steady::now() + std::chrono::milliseconds(500);
    for (auto it = locks.begin(); it != locks.end() && detail::Steady::now() < pass_ends;) {
      detail::DeadlineScope bounded(detail::Steady::now() + std::chrono::milliseconds(250));
      try {
        metrics_.backend(BackendOp::release, "", 1, [&] { (*it)->release(); });
        it = locks.erase(it);
      } catch (...) {
        ++it;
      }
    }
    if (locks.empty() || clock_.steady_now() >= give_up) return std::nullopt;
    if (++*tries >= 10) *next = std::min<Duration>(*next * 2, std::chrono::seconds(1));
    return *next;
  });
}

// ---------------------------------------------------------------------------
// wait: for a lease held in another process, and for this process's leader

// Polls the slots whose lease another process holds, one request a poll
// for all that are due, on the schedule their locks allow, until each has a
// value, is created here (its lease freed), or the wait runs out.
void CacheRegion::Engine::wait_for_others(Context& ctx, std::span<Slot* const> remote) {
  if (remote.empty()) return;
  for (std::size_t i = 0; i < remote.size(); ++i) detail::Counters::add(counters_.lock_waits);
  const SteadyTime started = clock_.steady_now();
  const SteadyTime give_up_at =
      options_.wait.max_wait
          ? started + std::chrono::duration_cast<SteadyTime::duration>(*options_.wait.max_wait)
          : SteadyTime::max();
  const SteadyTime limit = std::min(ctx.deadline, give_up_at);
  struct Waiting {
    Slot* slot;
    SteadyTime next;
  };
  std::vector<Waiting> waiting;
  auto schedule = [&](Waiting& w, SteadyTime now) {
    const auto pause =
        detail::next_poll_in(options_.wait, now - started, fleet_.now(), w.slot->lease.holder,
                             fleet_.error(), detail::poll_jitter());
    w.next = now + std::chrono::duration_cast<SteadyTime::duration>(pause);
  };
  for (Slot* s : remote) schedule(waiting.emplace_back(Waiting{s, started}), started);
  while (!waiting.empty()) {
    SteadyTime next = SteadyTime::max();
    for (const auto& w : waiting) next = std::min(next, w.next);
    if (next > limit || !clock_.sleep_until(next, ctx.stop)) {
      if (next > limit) clock_.sleep_until(limit, ctx.stop);
      const auto reason = ctx.stop.stop_requested() ? WaitTimeout::Reason::cancelled
                          : limit == give_up_at     ? WaitTimeout::Reason::max_wait
                                                    : WaitTimeout::Reason::deadline;
      std::vector<Slot*> late;
      for (const auto& w : waiting) late.push_back(w.slot);
      give_up(ctx, late, reason);
      return;
    }
    const SteadyTime now = clock_.steady_now();
    std::vector<Slot*> due;
    for (const auto& w : waiting) {
      if (w.next <= now) due.push_back(w.slot);
    }
    poll(ctx, due);
    std::erase_if(waiting, [](const Waiting& w) { return w.slot->served != Served::none; });
    const SteadyTime after = clock_.steady_now();
    for (auto& w : waiting) {
      if (w.next <= now) schedule(w, after);
    }
  }
}

// One poll of `due` (value and lease together): a value ends the wait; a
// lease that was freed is claimed, and the value made here.
void CacheRegion::Engine::poll(Context& ctx, std::span<Slot* const> due) {
  try {
    with_leases(BackendOp::poll, due,
                [&](std::span<LeaseSlot> leases) { backend_->poll(leases, ctx.read_request); });
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "poll", due.front()->user_key, e);
    if (ctx.stop.stop_requested() || clock_.steady_now() >= ctx.deadline) {
      // The call's own deadline (or stop) cut the poll short: the wait ends
      // as it would have without the request, never in a second creator.
      give_up(ctx, due,
              ctx.stop.stop_requested() ? WaitTimeout::Reason::cancelled
                                        : WaitTimeout::Reason::deadline);
      return;
    }
    // The server went away while we waited: create here, without the lock.
    for (Slot* s : due) s->degraded = true;
    create_for_call(ctx, due);
    return;
  }
  std::vector<Slot*> takeover, to_claim;
  for (Slot* s : due) {
    if (s->lease.item) {
      Item item = std::move(*s->lease.item);
      s->lease.item.reset();
      const Found found = examine_item(ctx, *s, item, true);
      if (detail::usable(found)) {
        s->found = found;
        s->at_hand = std::make_shared<const Item>(std::move(item));
        s->value_is_at_hand = true;
        note_read(ctx, s->key, s->at_hand);
        s->lead->publish(s->at_hand);
        s->served = found == Found::stale ? Served::stale : Served::waited;
        continue;
      }
    }
    switch (s->lease.lease) {
      case LeaseState::won:  // a backend that can only tell by trying took it
        takeover.push_back(s);
        break;
      case LeaseState::held:
        break;
      default:  // free: its holder finished without storing, or died
        to_claim.push_back(s);
        break;
    }
  }
  // Free: the holder finished without storing, or died. Won: take over;
  // failed: create here, degraded; held: wait on.
  claim(to_claim);
  for (Slot* s : to_claim) {
    if (s->degraded || s->lease.lease == LeaseState::won) takeover.push_back(s);
  }
  if (takeover.empty()) return;
  std::vector<Slot*> won;
  for (Slot* s : takeover) {
    s->confirmed = false;
    if (!s->degraded) won.push_back(s);
  }
  confirm(ctx, won);
  std::erase_if(takeover, [](const Slot* s) { return s->served != Served::none; });
  if (!takeover.empty()) create_for_call(ctx, takeover);
}

// Out of time: never a second creator, unless the policy asks for one after
// max_wait. This process's callers waiting on these slots start over.
void CacheRegion::Engine::give_up(Context& ctx, std::span<Slot* const> late,
                                  WaitTimeout::Reason reason) {
  detail::Counters::add(counters_.wait_timeouts, late.size());
  if (reason == WaitTimeout::Reason::max_wait && options_.wait.create_after_max_wait) {
    reporter_.report(ErrorKind::lock, "wait", late.front()->user_key,
                     fmt::format("gave up waiting for the lock holder after {}; creating here",
                                 format_duration(*options_.wait.max_wait)));
    for (Slot* s : late) s->degraded = true;
    create_for_call(ctx, late);
    return;
  }
  for (Slot* s : late) s->lead->abandon();
  throw WaitTimeout(reason, late.front()->user_key);
}

void CacheRegion::Engine::follow(Context& ctx, std::span<Slot* const> followers,
                                 std::vector<Slot*>& restart) {
  const SteadyTime limit =
      options_.wait.max_wait
          ? std::min(ctx.deadline,
                     clock_.steady_now() +
                         std::chrono::duration_cast<SteadyTime::duration>(*options_.wait.max_wait))
          : ctx.deadline;
  for (Slot* s : followers) {
    const auto result = s->follow->wait(clock_, limit, ctx.stop);
    s->follow.reset();
    if (!result) {
      detail::Counters::add(counters_.wait_timeouts);
      throw WaitTimeout(ctx.stop.stop_requested()
                            ? WaitTimeout::Reason::cancelled
                            : (limit == ctx.deadline ? WaitTimeout::Reason::deadline
                                                     : WaitTimeout::Reason::max_wait),
                        s->user_key);
    }
    if (result->error) std::rethrow_exception(result->error);
    if (result->item) {
      const Found found = examine_item(ctx, *s, *result->item, false);
      if (detail::usable(found)) {
        s->found = found;
        s->at_hand = result->item;
        s->value_is_at_hand = true;
        s->served = found == Found::stale ? Served::stale : Served::waited;
        continue;
      }
    }
    restart.push_back(s);  // the leader gave up: start over
  }
}

// ---------------------------------------------------------------------------
// account: how each key was served, counted in one place

Outcome CacheRegion::Engine::account(const Slot& slot) noexcept {
  switch (slot.served) {
    case Served::fresh:
      detail::Counters::add(counters_.hits);
      return Outcome::fresh;
    case Served::local:
      detail::Counters::add(counters_.local_hits);
      return Outcome::fresh;
    case Served::stale:
      detail::Counters::add(counters_.stale_served);
      return Outcome::stale;
    case Served::waited:
      detail::Counters::add(counters_.waited);
      return Outcome::waited;
    case Served::created:
    case Served::none:
      break;
  }
  return Outcome::created;  // counted where it was created
}

// ---------------------------------------------------------------------------
// The region's other operations

std::shared_ptr<Item> CacheRegion::Engine::envelope(std::string_view user_key, std::uint64_t check,
                                                    detail::FunctionRef<void(std::string&)> encode,
                                                    std::chrono::microseconds took,
                                                    detail::EnvelopeKind kind) {
  auto item = std::make_shared<Item>();
  item->flags = detail::kEnvelopeFlags;
  detail::begin_envelope(item->data);
  encode(item->data);
  try {
    finish(item->data, fleet_.earliest(), took, check, kind);
  } catch (const std::length_error& e) {
    reporter_.report(ErrorKind::backend, "set", user_key, e);
    return nullptr;
  }
  return item;
}

void CacheRegion::Engine::finish(std::string& envelope, TimePoint created_at,
                                 std::chrono::microseconds took, std::uint64_t check,
                                 detail::EnvelopeKind kind) {
  const auto encoding =
      detail::finish_envelope(envelope, created_at, took, check, kind,
                              {options_.compression.threshold, options_.compression.level});
  if (encoding != detail::PayloadEncoding::plain) detail::Counters::add(counters_.compressed);
}

// The codec's bytes of an envelope already examined (its payload, or that
// decompressed into `scratch`); nullopt if it does not decompress.
std::optional<std::string_view> CacheRegion::Engine::payload_of(
    const detail::EnvelopeView& envelope, std::string& scratch) const {
  detail::EnvelopeError error{};
  return detail::payload_bytes(envelope, scratch, options_.compression.max_size, error);
}

// A tombstone outlives any creation that began before it: a lock lives
// lock_timeout past its last extension, and extensions stop at max_creation.
Ttl CacheRegion::Engine::tombstone_ttl() const noexcept {
  const Duration longest = options_.max_creation.value_or(std::chrono::hours(24));
  return std::min<Ttl>(std::chrono::ceil<Ttl>(options_.lock_timeout + longest),
                       std::chrono::hours(24 * 30));
}

bool CacheRegion::Engine::get(std::string_view user_key, Decode decode, TimePoint* created_at,
                              bool* fresh, const Expiration* expiration) {
  prepare();
  Context ctx;
  ctx.expiration = expiration != nullptr ? *expiration : options_.expiration;
  ctx.allow_early = false;
  Slot slot;
  slot.user_key = user_key;
  slot.key = detail::map_key(options_.key_prefix, user_key);
  slot.check = detail::key_check(slot.key);
  slot.bind();
  if (local_.enabled()) {
    slot.local_writes = local_.writes(slot.key);
    if (auto item = local_.get(slot.key, clock_.steady_now())) {
      if (examine(ctx, slot, item->data, item->flags, true, decode) == Found::fresh) {
        detail::Counters::add(counters_.local_hits);
        if (fresh != nullptr) *fresh = true;
        if (created_at != nullptr) *created_at = slot.created_at;
        return true;
      }
    }
  }
  try {
    Duration decoding{};  // in the visitor: not the request's time
    const bool there = metrics_.backend(
        BackendOp::get, slot.user_key, 1,
        [&] {
          return backend_->read_view(
              slot.lease, LeaseRequest{}, [&](std::string_view data, std::uint32_t flags) {
                const detail::Stopwatch watch(metrics_, decoding);
                slot.found = examine(ctx, slot, data, flags, false, decode);
                if (slot.found == Found::fresh && local_.enabled()) {
                  fill_local(slot, std::make_shared<const Item>(Item{std::string(data), flags}));
                }
                if (!kept_.empty()) {
                  note_read(ctx, slot.key,
                            detail::usable(slot.found)
                                ? std::make_shared<const Item>(Item{std::string(data), flags})
                                : nullptr);
                }
              });
        },
        &decoding);
    if (!there) {
      slot.found = Found::missing;
      note_read(ctx, slot.key, nullptr);
    }
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "get", user_key, e);
    slot.found = Found::error;
  }
  const bool is_fresh = slot.found == Found::fresh;
  detail::Counters::add(is_fresh ? counters_.hits : counters_.misses);
  if (!detail::usable(slot.found)) return false;
  if (fresh != nullptr) *fresh = is_fresh;
  if (created_at != nullptr) *created_at = slot.created_at;
  return true;
}

bool CacheRegion::Engine::set(std::string_view user_key, Encode encode,
                              const Expiration* expiration) {
  prepare();
  const std::string key = detail::map_key(options_.key_prefix, user_key);
  kept_.erase(key);  // this process's own write wins over what it kept
  auto item = envelope(user_key, detail::key_check(key), encode, std::chrono::microseconds(0));
  if (!item) return false;
  LocalForget forget(*this);
  forget.add(key);
  try {
    metrics_.backend(BackendOp::store, user_key, 1, [&] {
      backend_->set(key, *item, judge_.ttl_for(expiration ? *expiration : options_.expiration));
    });
    return true;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "set", user_key, e);
    return false;
  }
}

bool CacheRegion::Engine::remove(std::string_view user_key) {
  prepare();
  const std::string key = detail::map_key(options_.key_prefix, user_key);
  const std::uint64_t check = detail::key_check(key);
  kept_.erase(key);
  LocalForget forget(*this);
  forget.add(key);
  try {
    // The tombstone keeps the removed value's creation duration: whoever
    // waits for the next creation knows how long it will likely take.
    const auto before =
        metrics_.backend(BackendOp::get, user_key, 1, [&] { return backend_->get(key); });
    bool existed = false;
    std::chrono::microseconds took{0};
    if (before) {
      const auto env = detail::decode_envelope(before->data, before->flags, check);
      existed = env.envelope && env.envelope->kind == detail::EnvelopeKind::value;
      if (env.envelope) took = env.envelope->creation_duration;
    }
    auto tombstone = envelope(
        user_key, check, [](std::string&) {}, took, detail::EnvelopeKind::tombstone);
    metrics_.backend(BackendOp::store, user_key, 1,
                     [&] { backend_->set(key, *tombstone, tombstone_ttl()); });
    detail::Counters::add(counters_.removals);
    return existed;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "remove", user_key, e);
    return false;
  }
}

bool CacheRegion::Engine::invalidate(std::string_view user_key, Invalidation kind) {
  if (kind == Invalidation::hard) return remove(user_key);
  prepare();
  const std::string key = detail::map_key(options_.key_prefix, user_key);
  const std::uint64_t check = detail::key_check(key);
  kept_.erase(key);
  LocalForget forget(*this);
  forget.add(key);
  try {
    // The stale value lives on as a stale value does (stale_grace), and at
    // least as long as a lease: a refresher that died holds the refresh no
    // longer than that.
    const Ttl keep_for = std::max(std::chrono::ceil<Ttl>(options_.stale_grace),
                                  std::chrono::ceil<Ttl>(options_.lock_timeout));
    // One request where the backend marks items stale itself.
    if (backend_->can_mark_stale()) {
      return metrics_.backend(BackendOp::mark_stale, user_key, 1,
                              [&] { return backend_->mark_stale(key, keep_for); });
    }
    // Else the value is rewritten, marked, unless it changed meanwhile.
    for (int attempt = 0; attempt < 4; ++attempt) {
      Cas version = 0;
      auto item = metrics_.backend(BackendOp::get, user_key, 1,
                                   [&] { return backend_->gets(key, version); });
      if (!item) return false;
      const auto env = detail::decode_envelope(item->data, item->flags, check);
      if (!env.envelope || env.envelope->kind == detail::EnvelopeKind::tombstone) return false;
      if (env.envelope->kind == detail::EnvelopeKind::stale) return true;
      detail::mark_envelope_stale(item->data);
      if (version == 0) {  // a backend without versions
        metrics_.backend(BackendOp::store, user_key, 1,
                         [&] { backend_->set(key, *item, keep_for); });
        return true;
      }
      if (metrics_.backend(BackendOp::store, user_key, 1,
                           [&] { return backend_->cas(key, *item, keep_for, version); })) {
        return true;
      }
    }
    reporter_.report(ErrorKind::backend, "invalidate", user_key,
                     "the value kept changing while it was marked stale; left as it is");
    return false;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "invalidate", user_key, e);
    return false;
  }
}

void CacheRegion::Engine::get_multi(std::span<const std::string_view> user_keys, DecodeAt decode) {
  prepare();
  if (user_keys.empty()) return;
  Context ctx;
  ctx.expiration = options_.expiration;
  ctx.allow_early = false;
  // The mapped keys and what the backend answers for them; each is judged
  // in one slot, reused (a million keys need no million slots).
  std::vector<std::string> keys(user_keys.size());
  std::vector<LeaseSlot> leases(user_keys.size());
  for (std::size_t i = 0; i < user_keys.size(); ++i) {
    keys[i] = detail::map_key(options_.key_prefix, user_keys[i]);
    leases[i].key = keys[i];
  }
  try {
    metrics_.backend(BackendOp::get, user_keys.front(), leases.size(),
                     [&] { backend_->read(leases, LeaseRequest{}); });
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "get_multi", user_keys.front(), e);
    return;
  }
  std::uint64_t hits = 0;
  for (std::size_t i = 0; i < leases.size(); ++i) {
    if (!leases[i].item) {
      note_read(ctx, keys[i], nullptr);
      continue;
    }
    Slot slot;
    slot.user_key = user_keys[i];
    slot.check = detail::key_check(keys[i]);
    slot.index = i;
    slot.lease.marked_stale = leases[i].marked_stale;
    const Found found = examine(ctx, slot, leases[i].item->data, leases[i].item->flags, false,
                                [&](std::string_view payload) { return decode(i, payload); });
    hits += found == Found::fresh;
    if (!kept_.empty()) {
      note_read(ctx, keys[i],
                detail::usable(found) ? std::make_shared<const Item>(std::move(*leases[i].item))
                                      : nullptr);
    }
    leases[i].item.reset();  // decoded: its bytes are not needed any more
  }

  detail::Counters::add(counters_.hits, hits);
  detail::Counters::add(counters_.misses, leases.size() - hits);
}

bool CacheRegion::Engine::set_multi(std::span<const std::string_view> user_keys, EncodeAt encode) {
  prepare();
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Item>> items;
  LocalForget forget(*this);  // what was set is read again from the backend
  bool ok = true;
  for (std::size_t i = 0; i < user_keys.size(); ++i) {
    std::string key = detail::map_key(options_.key_prefix, user_keys[i]);
    auto item = envelope(
        user_keys[i], detail::key_check(key), [&](std::string& out) { encode(i, out); },
        std::chrono::microseconds(0));
    kept_.erase(key);
    forget.add(key);
    if (!item) {
      ok = false;
      continue;
    }
    keys.push_back(std::move(key));
    items.push_back(std::move(item));
  }
  if (keys.empty()) return ok;
  std::vector<KeyedItem> batch;
  for (std::size_t i = 0; i < keys.size(); ++i) batch.push_back(KeyedItem{keys[i], items[i].get()});
  try {
    metrics_.backend(BackendOp::store, user_keys.front(), batch.size(),
                     [&] { backend_->set_multi(batch, judge_.ttl_for(options_.expiration)); });
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "set_multi", user_keys.front(), e);
    return false;
  }
  return ok;
}

bool CacheRegion::Engine::remove_multi(std::span<const std::string_view> user_keys) {
  prepare();
  if (user_keys.empty()) return true;
  std::vector<std::string> keys;
  std::vector<std::shared_ptr<Item>> tombstones;
  LocalForget forget(*this);
  for (auto user_key : user_keys) {
    std::string key = detail::map_key(options_.key_prefix, user_key);
    kept_.erase(key);
    forget.add(key);
    tombstones.push_back(envelope(
        user_key, detail::key_check(key), [](std::string&) {}, std::chrono::microseconds(0),
        detail::EnvelopeKind::tombstone));
    keys.push_back(std::move(key));
  }
  std::vector<KeyedItem> batch;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    batch.push_back(KeyedItem{keys[i], tombstones[i].get()});
  }
  try {
    metrics_.backend(BackendOp::store, user_keys.front(), batch.size(),
                     [&] { backend_->set_multi(batch, tombstone_ttl()); });
    detail::Counters::add(counters_.removals, batch.size());
    return true;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, "remove_multi", user_keys.front(), e);
    return false;
  }
}

void CacheRegion::Engine::invalidate(Invalidation kind) {
  prepare();
  invalidations_.invalidate(kind, fleet_.latest());
}

}  // namespace dogpile
