// SPDX-License-Identifier: MIT
// The dogpile engine (internal): the one algorithm behind every CacheRegion
// path. See docs/engine.md for the design; step.cpp reads in the same
// order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/fork.hpp"
#include "base/task.hpp"
#include "dogpile/region.hpp"
#include "engine/chores.hpp"
#include "engine/counters.hpp"
#include "engine/fleet_clock.hpp"
#include "engine/flight.hpp"
#include "engine/held_elsewhere.hpp"
#include "engine/invalidation.hpp"
#include "engine/judge.hpp"
#include "engine/lifetimes.hpp"
#include "engine/local_store.hpp"
#include "engine/lock_keeper.hpp"
#include "engine/metrics.hpp"
#include "engine/reporter.hpp"
#include "format/envelope.hpp"

namespace dogpile {
namespace detail {

class Io;  // engine/io.hpp: a call's driver
class Loop;

// What the local tier holds (every item the engine puts there is one): the
// envelope, and the value decoded by the call that filled it when that call
// named its type (Typed): a later call for the same type copies it rather
// than decoding the envelope's bytes.
struct HeldItem : Item {
  std::shared_ptr<const void> object;
  const void* type = nullptr;
};

/// How a slot stands with the backend: it answers; its read failed (what
/// degraded mode kept is judged instead, and no lock is asked for); or the
/// slot goes on without the distributed lock (the read, a claim or a poll
/// failed, or a waiter gave up): created under in-process protection only.
enum class Backing : std::uint8_t { answering, read_failed, degraded };

/// How a key's part of a call ended.
enum class Served : std::uint8_t { none, fresh, local, stale, waited, created };

/// One distinct key of a call, on its way through the step.
struct Slot {
  // --- the key ---
  std::string_view user_key;
  std::string key;                  // the backend key
  std::uint64_t check = 0;          // key_check(key)
  std::size_t index = 0;            // where its value goes in the call
  std::vector<std::size_t> copies;  // further indices with the same key (multi)

  // --- what was found ---
  Found found = Found::missing;
  std::shared_ptr<const Item> at_hand;   // the usable envelope this caller holds
  TimePoint created_at{};                // of at_hand
  std::chrono::microseconds took{0};     // its creation duration
  std::chrono::microseconds history{0};  // the last creation duration seen for the key, from
                                         // any envelope (even a miss): told to waiters
  bool value_is_at_hand = false;         // the call's value slot holds at_hand's value
  bool counted_miss = false;
  std::uint64_t local_writes = 0;  // the local tier's writes before this slot's read

  // --- this process ---
  std::optional<FlightTable::Lead> lead;
  std::shared_ptr<Flight> follow;

  // --- other processes ---
  Lease lease;                      // the lease, its lock and fence
  std::unique_ptr<Item> read_item;  // what the last claim, confirm or poll read
  Cas read_cas = 0;                 // the version the last read saw (0: unknown)
  bool marked_stale = false;        // the backend marks the item stale
  bool stored = false;              // the creation's value was stored
  bool confirmed = false;           // the item at hand was read with the lease held
  Backing backing = Backing::answering;

  // --- creation ---
  std::shared_ptr<Item> made;
  bool keep = true;

  // --- the end ---
  Served served = Served::none;

  [[nodiscard]] bool has_value() const noexcept { return usable(found) && at_hand != nullptr; }
};

/// The engine behind a CacheRegion: its parts, and the step over them.
/// Its sources, by job: engine.cpp (the parts put together, fork, chores),
/// step.cpp, reads.cpp, create.cpp, wait.cpp, releases.cpp, background.cpp,
/// plain.cpp (docs/engine.md).
class Engine : ForkAware {
 public:
  Engine(std::shared_ptr<Backend> backend, RegionOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  Outcome run(const Call& call);
  /// Runs `call` on `loop`, no thread held while it waits (docs/async.md);
  /// `done` receives its Outcome or its exception, on the loop (or here, if
  /// it ends before waiting). `call`, and what it refers to, must live until
  /// `done` is called.
  void start(const Call& call, Loop& loop,
             std::function<void(std::exception_ptr, Outcome, bool own_turn)> done);

  // The region's other operations.
  bool get(std::string_view key, Decode decode, TimePoint* created_at, bool* fresh,
           const Expiration* expiration);
  bool set(std::string_view key, Encode encode, const Expiration* expiration);
  bool remove(std::string_view key);
  void get_multi(std::span<const std::string_view> keys, DecodeAt decode);
  bool set_multi(std::span<const std::string_view> keys, EncodeAt encode);
  bool remove_multi(std::span<const std::string_view> keys);
  void invalidate(Invalidation kind);
  bool invalidate(std::string_view key, Invalidation kind);

  [[nodiscard]] RegionStats stats() const noexcept;
  [[nodiscard]] RegionMetrics metrics() const noexcept { return metrics_.snapshot(); }
  [[nodiscard]] std::size_t in_flight() const { return flights_.size(); }
  [[nodiscard]] Duration clock_offset() const noexcept { return fleet_.offset(); }
  void set_error_handler(ErrorHandler handler) { reporter_.set_handler(std::move(handler)); }
  [[nodiscard]] const RegionOptions& options() const noexcept { return options_; }
  [[nodiscard]] Backend& backend() const noexcept { return *backend_; }

  void after_fork_in_child() noexcept override;

  struct Job;

 private:
  class Written;
  // A user key as the backend knows it, and the check its envelopes carry.
  struct MappedKey {
    std::string key;
    std::uint64_t check = 0;
  };
  [[nodiscard]] MappedKey map(std::string_view user_key) const;
  // Points a new slot at `user_key`.
  void aim(detail::Slot& slot, std::string_view user_key) const;
  struct Context;
  using Creator =
      detail::FunctionRef<void(std::span<detail::Slot* const>, std::span<detail::CreateOut>)>;
  // A creator that completes later (an asynchronous call's coroutine).
  using LaterCreator = detail::FunctionRef<void(std::span<detail::Slot* const>,
                                                std::span<detail::CreateOut>, detail::CreatedFn)>;

  // The step, in order (docs/engine.md).
  // Before a call: the fleet clock measured, the invalidation record read
  // when due (`now`: the steady time, if the caller has it). Whether it
  // made a request (then `now` has passed).
  bool prepare(std::optional<SteadyTime> now = std::nullopt);
  // A call's context, on driver `io`; an Outcome if the local tier served
  // its one key (`slot`, aimed at it). run_keys is the rest of the call.
  std::optional<Outcome> begin(Context& ctx, detail::Slot& slot, const Call& call,
                               SteadyTime started, detail::Io& io);
  // (`again`: one key starting over, its leader having given up.)
  detail::Task<Outcome> run_keys(Context& ctx, detail::Slot& slot, bool again = false);
  detail::Task<Outcome> run_many(Context& ctx);  // run_keys for more than one key
  // An asynchronous call: its driver, context and slot, until it is done.
  struct Started;
  struct Detached;
  Detached drive(std::unique_ptr<Started> started, bool again = false);
  void follow_leader(std::unique_ptr<Started> started);
  static void leader_done(void* started);
  // Records the call and hands it its result (`own_turn`: see start_call;
  // only then may this throw, what the caller's completion threw).
  void finish(Started& started, std::exception_ptr error, Outcome outcome, bool own_turn = false);
  struct ReadOne;
  void read_one(Context& ctx, detail::Slot& slot);
  detail::Task<> read_one_on_loop(Context& ctx, detail::Slot& slot);
  void read(Context& ctx, std::span<detail::Slot* const> slots);
  detail::Task<> step(Context& ctx, std::vector<detail::Slot*> pending);
  detail::Task<> lead(Context& ctx, std::span<detail::Slot* const> pending, bool reread,
                      std::vector<detail::Slot*>& followers);
  void join_flights(Context& ctx, std::span<detail::Slot* const> slots,
                    std::vector<detail::Slot*>& leaders, std::vector<detail::Slot*>& followers);
  void take_leases(Context& ctx, std::span<detail::Slot* const> leaders,
                   std::vector<detail::Slot*>& won, std::vector<detail::Slot*>& remote);
  void confirm(Context& ctx, std::vector<detail::Slot*>& won);
  void hand_to_background(Context& ctx, std::vector<detail::Slot*>& won);
  detail::Task<> create(Context& ctx, std::span<detail::Slot* const> slots, Creator creator,
                        bool background, const LaterCreator* later = nullptr);
  detail::Task<> create_for_call(Context& ctx, std::span<detail::Slot* const> slots);
  detail::Task<> wait_for_others(Context& ctx, std::span<detail::Slot* const> remote);
  detail::Task<> poll(Context& ctx, std::span<detail::Slot* const> due);
  detail::Task<> give_up(Context& ctx, std::span<detail::Slot* const> late,
                         WaitTimeout::Reason reason);
  detail::Task<> follow(Context& ctx, std::span<detail::Slot* const> followers,
                        std::vector<detail::Slot*>& restart);
  // How long a follower waits for its leader, from now.
  [[nodiscard]] SteadyTime follow_limit(const Context& ctx) const;
  // What a follower got by `limit`: true if it is served (false: its
  // leader gave up, and it starts over); throws WaitTimeout, or the
  // creator's exception.
  bool settle_follow(Context& ctx, detail::Slot& slot,
                     const std::optional<detail::Flight::Result>& result, SteadyTime limit);
  Outcome account(const detail::Slot& slot) noexcept;
  void read_failed(Context& ctx, detail::Slot& slot, bool count = true);
  // The backend answered a read of `key`: a copy degraded mode kept of it
  // becomes what was read (`item`, a usable envelope), or goes (null). One
  // relaxed load when nothing is kept.
  void note_read(const Context& ctx, std::string_view key, std::shared_ptr<const Item> item);
  [[nodiscard]] SteadyTime kept_until(const Context& ctx) const noexcept;

  // The local tier.
  // `may_revalidate`: an item past its time may be kept after a version
  // check (one key; many are read together instead).
  bool serve_local(Context& ctx, detail::Slot& slot, bool may_revalidate = true);
  // An item of the local tier whose time passed: kept (and returned) if the
  // backend says its version has not changed.
  std::shared_ptr<const Item> revalidate_local(Context& ctx, detail::Slot& slot, SteadyTime now);
  // `version`: the item's as read (0: unknown, as for a value made here).
  // `decoded`: the call's value slot holds `item` decoded (a read): a copy
  // is held beside it. A value made here is not (a lossy codec's decode of
  // its bytes may differ from what the creator returned).
  void fill_local(const Context& ctx, const detail::Slot& slot, const Item& item, Cas version = 0,
                  bool decoded = true);
  // What the local tier holds for `item`: its envelope decompressed, and the
  // call's value decoded if it names its type (`typed`).
  [[nodiscard]] std::shared_ptr<const detail::HeldItem> held(const Item& item,
                                                             const detail::Typed* typed) const;
  // Judges a held item, its value taken decoded where it holds the call's type.
  detail::Found examine_held(Context& ctx, detail::Slot& slot, const Item& item);
  [[nodiscard]] Duration local_ttl() const noexcept {
    return options_.local ? options_.local->ttl : Duration::zero();
  }

  // Parts of the steps.
  detail::Found examine(const Context& ctx, detail::Slot& slot, std::string_view data,
                        std::uint32_t flags, bool quiet, Decode decode);
  detail::Found examine_item(Context& ctx, detail::Slot& slot, const Item& item, bool quiet);
  void claim(const Context& ctx, std::span<detail::Slot* const> slots);
  void serve_at_hand(Context& ctx, detail::Slot& slot);
  void redecode_at_hand(Context& ctx, detail::Slot& slot);
  void finish(std::string& envelope, TimePoint created_at, std::chrono::microseconds took,
              std::uint64_t check, detail::EnvelopeKind kind);
  [[nodiscard]] std::optional<std::string_view> payload_of(const detail::EnvelopeView& envelope,
                                                           std::string& scratch) const;
  void release(std::span<detail::Slot* const> slots, const Request& request);
  void run_job(Job& job) noexcept;
  void abandon_job(Job& job) noexcept;
  // Runs `op`, a request of the backend's for `key` (the first of many):
  // true if it returned. A failure is reported (operation `name`, then
  // `note`) and false returned; running out of memory goes on up.
  template <class Op>
  bool attempt(std::string_view name, std::string_view key, Op&& op, std::string_view note = {});
  // attempt() of a lease-aware operation on the slots' keys and leases,
  // timed as `what`; what each key read goes to its slot.
  bool with_leases(BackendOp what, std::string_view name, std::span<detail::Slot* const> slots,
                   detail::FunctionRef<void(std::span<KeyRead>)> op, std::string_view note = {});
  std::shared_ptr<Item> envelope(std::string_view user_key, std::uint64_t check,
                                 detail::FunctionRef<void(std::string&)> encode,
                                 std::chrono::microseconds took,
                                 detail::EnvelopeKind kind = detail::EnvelopeKind::value);

  const std::shared_ptr<Backend> backend_;
  const RegionOptions options_;
  const Clock& clock_;
  mutable detail::Counters counters_;
  detail::Reporter reporter_;
  detail::Metrics metrics_;
  detail::Judge judge_;
  detail::Lifetimes lifetimes_;
  detail::Invalidations invalidations_;
  detail::FleetClock fleet_;
  detail::FlightTable flights_;
  detail::HeldElsewhere held_;
  detail::LocalStore kept_;             // values made while the backend failed (degraded mode)
  detail::LocalStore local_;            // the local tier (RegionOptions::local); off: keeps nothing
  std::shared_ptr<Executor> executor_;  // set when background_refresh is on

  // Background jobs queued or running, for the destructor to abandon or wait
  // for. The executor owns them; a job it drops gives its locks back.
  std::mutex jobs_mutex_;
  std::condition_variable jobs_done_;
  std::vector<std::pair<Job*, std::weak_ptr<Job>>> jobs_;

  detail::LockKeeper keeper_;  // after what its thread uses: destroyed first
  detail::Chores chores_;      // on the keeper's thread
  ForkRegistration registration_;
};

}  // namespace detail
}  // namespace dogpile
