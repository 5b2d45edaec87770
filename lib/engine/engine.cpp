// SPDX-License-Identifier: MIT
// The engine: its parts put together, fork(), and the chores before a call.
#include "engine/engine.hpp"

#include <utility>

#include "dogpile/executor.hpp"
#include "engine/parts.hpp"
#include "format/keys.hpp"

namespace dogpile::detail {

Engine::Engine(std::shared_ptr<Backend> backend, RegionOptions options)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : system_clock()),
      reporter_(options_.on_error, counters_),
      metrics_(clock_, options_.observer),
      judge_(options_),
      lifetimes_(options_),
      invalidations_(*backend_, options_.key_prefix + "#inv", options_.invalidation_check, clock_,
                     reporter_, counters_, &metrics_),
      fleet_(clock_, *backend_, invalidations_.key(), options_.clock_sync, &metrics_),
      kept_(options_.degraded_entries, options_.degraded_bytes),
      local_(options_.local ? options_.local->max_entries : 0,
             options_.local ? options_.local->max_bytes : 0,
             options_.local && options_.local->admission),
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
      chores_(keeper_, clock_, &metrics_),
      registration_(*this) {}

Engine::~Engine() {
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

void Engine::after_fork_in_child() noexcept {
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
  chores_.after_fork_in_child();
}

// Before a call: the fleet clock measured once, the invalidation record read
// if due, the background chore running.
bool Engine::prepare(std::optional<SteadyTime> now) {
  bool asked = fleet_.unmeasured();
  fleet_.ensure_measured();
  asked = invalidations_.check(now ? *now : clock_.steady_now()) || asked;
  chores_.keep_measured(fleet_, [this](const std::string& error) {
    reporter_.report(ErrorKind::backend, "measure clock", invalidations_.key(),
                     error +
                         " (every clock_sync, a region measures this host's clock against the "
                         "server's, so that hosts judge ages alike; until it can, it keeps the "
                         "last measure)");
  });
  return asked;
}

Engine::MappedKey Engine::map(std::string_view user_key) const {
  MappedKey mapped{map_key(options_.key_prefix, user_key)};
  mapped.check = key_check(mapped.key);
  return mapped;
}

void Engine::aim(Slot& slot, std::string_view user_key) const {
  auto [key, check] = map(user_key);
  slot.user_key = user_key;
  slot.key = std::move(key);
  slot.check = check;
}

RegionStats Engine::stats() const noexcept {
  RegionStats s = counters_.snapshot();
  s.local_entries = local_.entries();
  s.local_bytes = local_.bytes();
  return s;
}

}  // namespace dogpile::detail
