// SPDX-License-Identifier: MIT
// What the engine's parts share (internal to lib/engine/): a call's
// context, a background job, this thread's decompression buffer.
#pragma once

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "engine/engine.hpp"

namespace dogpile::detail {

inline std::string what_of(const std::exception_ptr& error) {
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
  static inline thread_local std::string shared_;
  static inline thread_local bool in_use_ = false;
  std::string own_;
  std::string* buffer_;
};

template <class D>
std::string format_duration(D d) {
  return fmt::format("{}", std::chrono::duration_cast<std::chrono::milliseconds>(d));
}

// What one call (or one background job) carries through the step.
struct Engine::Context {
  Io* io = nullptr;                   // the call's driver: how it waits (engine/io.hpp)
  const Call* call = nullptr;         // get_or_create's; null: a job or a plain operation
  const DecodeAt* decoder = nullptr;  // where values go; null: nowhere (a background job)
  Expiration expiration;
  Ttl ttl{};  // of the items it stores
  SteadyTime deadline = SteadyTime::max();
  std::stop_token stop;
  LeaseRequest read_request;  // what a read may claim (the meta protocol grants it there)
  Request request;            // what every request carries: the deadline, the stop
  bool allow_early = true;
  // A failed read serves what degraded mode kept (get_or_create); false: it
  // is a miss (a plain get reports the failure and returns nothing).
  bool serve_kept = true;
  // When the call began, for its first look at the local tier (one reading
  // of the clock); taken by that look.
  std::optional<SteadyTime> started;

  bool decode(std::size_t index, std::string_view payload) const {
    return decoder == nullptr || (*decoder)(index, payload);
  }
};

// A background regeneration: the slots a caller handed over (their flights
// and locks with them), and an owning copy of the creation.
struct Engine::Job {
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

template <class Op>
bool Engine::attempt(std::string_view name, std::string_view key, Op&& op, std::string_view note) {
  try {
    op();
    return true;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    reporter_.report(ErrorKind::backend, name, key, e, note);
    return false;
  }
}

// The keys a write of this process (set, remove, invalidate, and their
// multi forms) is about. Each key's copy kept for outages goes at once (this
// process's own write wins over it); its local-tier entry goes when this
// leaves scope, after the backend's write however that ended. A write
// forgets rather than puts its value: two writes racing in this process then
// cannot leave the tier disagreeing with the order the backend saw; the
// next read fills it from the backend, and a fill that read before the
// write is fenced out.
class Engine::Written {
 public:
  explicit Written(Engine& engine) : engine_(engine) {}
  Written(const Written&) = delete;
  Written& operator=(const Written&) = delete;
  ~Written() {
    for (const auto& key : local_) engine_.local_.erase(key);
  }
  MappedKey add(std::string_view user_key) {
    MappedKey mapped = engine_.map(user_key);
    engine_.kept_.erase(mapped.key);
    if (engine_.local_.enabled()) local_.push_back(mapped.key);
    return mapped;
  }

 private:
  Engine& engine_;
  std::vector<std::string> local_;
};

}  // namespace dogpile::detail
