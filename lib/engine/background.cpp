// SPDX-License-Identifier: MIT
// Background regeneration: the stale winner returns the stale value; a job
// on the executor creates.
#include "engine/engine.hpp"

#include <algorithm>
#include <utility>

#include "dogpile/executor.hpp"
#include "engine/io.hpp"
#include "engine/parts.hpp"

namespace dogpile::detail {

// ---------------------------------------------------------------------------
// background: the stale winner returns the stale value; a job creates

void Engine::hand_to_background(Context& ctx, std::vector<Slot*>& won) {
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
  }
  job->state = Job::done;
}

void Engine::run_job(Job& job) noexcept {
  try {
    std::vector<Slot*> slots;
    for (auto& s : job.slots) slots.push_back(&s);
    auto make = [&](std::span<Slot* const> made, std::span<detail::CreateOut> out) {
      std::vector<std::string_view> keys;
      for (const Slot* s : made) keys.push_back(s->user_key);
      job.make(keys, out);
    };
    SyncIo io(clock_);  // a job runs on the executor's thread
    job.ctx.io = &io;
    create(job.ctx, slots, make, true).run_here();
  } catch (...) {
    // create() reports a background creator's errors itself.
  }
  job.slots.clear();  // completes any flight left, before the engine may go
  job.state = Job::done;
  std::lock_guard lock(jobs_mutex_);
  std::erase_if(jobs_, [&](const auto& j) { return j.first == &job; });
  jobs_done_.notify_all();
}

void Engine::abandon_job(Job& job) noexcept {
  std::vector<Slot*> slots;
  for (auto& s : job.slots) slots.push_back(&s);
  release(slots, Request{});  // no caller waits: bounded by the poll timeout
  job.slots.clear();          // the flights are abandoned: their followers start over
  std::lock_guard lock(jobs_mutex_);
  std::erase_if(jobs_, [&](const auto& j) { return j.first == &job; });
  jobs_done_.notify_all();
}

}  // namespace dogpile::detail
