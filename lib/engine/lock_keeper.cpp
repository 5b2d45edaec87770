// SPDX-License-Identifier: MIT
#include "engine/lock_keeper.hpp"

#include <algorithm>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace dogpile::detail {

LockKeeper::LockKeeper(const Clock& clock, Report report, Metrics* metrics)
    : clock_(clock), report_(std::move(report)), metrics_(metrics), registration_(*this) {}

LockKeeper::~LockKeeper() {
  registration_.reset();
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
}

void LockKeeper::Ticket::reset() noexcept {
  if (keeper_ == nullptr) return;
  {
    std::unique_lock lock(keeper_->mutex_);
    keeper_->extended_.wait(lock, [&] { return !entry_->busy; });
    keeper_->entries_.erase(entry_);
  }
  keeper_ = nullptr;
}

void LockKeeper::start_locked(SteadyTime due) {
  if (!thread_.joinable()) thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  if (due < next_wake_) {
    changed_ = true;
    next_wake_ = SteadyTime::min();  // until the thread has looked again
    wake_.notify_all();
  }
}

LockKeeper::Ticket LockKeeper::keep(DistributedLock& lock, std::string key, Duration interval,
                                    std::optional<Duration> max_creation,
                                    std::function<void()> on_hung) {
  std::lock_guard guard(mutex_);
  const SteadyTime now = clock_.steady_now();
  const SteadyTime hung_at =
      max_creation ? now + std::chrono::duration_cast<SteadyTime::duration>(*max_creation)
                   : SteadyTime::max();
  const SteadyTime due = now + std::chrono::duration_cast<SteadyTime::duration>(interval);
  entries_.push_back(Entry{&lock, std::move(key), interval, due, hung_at, std::move(on_hung)});
  auto it = std::prev(entries_.end());
  start_locked(std::min(due, hung_at));
  return Ticket(this, it);
}

void LockKeeper::schedule(Duration delay, std::function<std::optional<Duration>()> chore) {
  std::lock_guard guard(mutex_);
  const SteadyTime due =
      clock_.steady_now() + std::chrono::duration_cast<SteadyTime::duration>(delay);
  chores_.push_back(Chore{due, std::move(chore)});
  start_locked(due);
}

Duration LockKeeper::interval_for(Ttl ttl) noexcept {
  const auto usable =
      std::max<Duration>(ttl - std::chrono::seconds(1), std::chrono::milliseconds(500));
  return usable / 3;
}

void LockKeeper::after_fork_in_child() noexcept {
  // The thread and the locks are the parent's: leak them, never join or
  // extend them here. A new thread starts on the next keep() or schedule().
  new (&thread_) std::jthread();
  new (&entries_) std::list<Entry>();
  new (&chores_) std::list<Chore>();
  new (&mutex_) std::mutex;
  new (&wake_) std::condition_variable_any;
  new (&extended_) std::condition_variable;
  changed_ = false;
  next_wake_ = SteadyTime::min();
}

void LockKeeper::run(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  while (!stop.stop_requested()) {
    const SteadyTime now = clock_.steady_now();
    // Extensions and chores run outside the mutex: one slow request must not
    // hold up creators that register or unregister their own locks.
    std::vector<Entry*> due;
    std::vector<std::pair<std::string, std::function<void()>>> hung;
    for (Entry& e : entries_) {
      if (!e.alive) continue;
      if (e.hung_at <= now) {
        e.alive = false;  // no longer extended: another process may take over
        hung.emplace_back(e.key, e.on_hung);
      } else if (e.due <= now) {
        e.busy = true;
        due.push_back(&e);
      }
    }
    std::list<Chore> chores;
    for (auto it = chores_.begin(); it != chores_.end();) {
      auto next = std::next(it);
      if (it->due <= now) chores.splice(chores.end(), chores_, it);
      it = next;
    }
    if (!due.empty() || !hung.empty() || !chores.empty()) {
      struct Outcome {
        bool lost = false;
        std::exception_ptr error;
      };
      std::vector<Outcome> outcomes(due.size());
      lock.unlock();
      for (std::size_t i = 0; i < due.size(); ++i) {
        try {
          outcomes[i].lost = !measured(metrics_, BackendOp::extend, due[i]->key, 1,
                                       [&] { return due[i]->lock->extend(); });
        } catch (const std::exception&) {
          outcomes[i].error = std::current_exception();
        }
      }
      for (auto& [key, on_hung] : hung) {
        report_(key, Event::hung, nullptr);
        if (on_hung) on_hung();
      }
      std::vector<std::optional<Duration>> again;
      for (auto& chore : chores) again.push_back(chore.run());
      lock.lock();
      std::vector<std::pair<std::string, Outcome>> reports;
      const SteadyTime after = clock_.steady_now();
      for (std::size_t i = 0; i < due.size(); ++i) {
        Entry& e = *due[i];
        e.busy = false;
        e.due = after + std::chrono::duration_cast<SteadyTime::duration>(e.interval);
        if (outcomes[i].lost) e.alive = false;  // taken over: extending again cannot help
        if (outcomes[i].lost || outcomes[i].error) {
          reports.emplace_back(e.key, std::move(outcomes[i]));
        }
      }
      std::size_t j = 0;
      for (auto it = chores.begin(); it != chores.end(); ++j) {
        auto next = std::next(it);
        if (again[j]) {
          it->due = after + std::chrono::duration_cast<SteadyTime::duration>(*again[j]);
          chores_.splice(chores_.end(), chores, it);
        }
        it = next;
      }
      extended_.notify_all();
      if (!reports.empty()) {
        lock.unlock();
        for (auto& [key, o] : reports) {
          if (o.lost || !o.error) {
            report_(key, Event::lost, nullptr);
            continue;
          }
          try {
            std::rethrow_exception(o.error);
          } catch (const std::exception& error) {
            report_(key, Event::failed, &error);
          }
        }
        lock.lock();
      }
      continue;
    }
    auto next = SteadyTime::max();
    for (const Entry& e : entries_) {
      if (e.alive) next = std::min({next, e.due, e.hung_at});
    }
    for (const Chore& c : chores_) next = std::min(next, c.due);
    changed_ = false;
    next_wake_ = next;
    clock_.wait_until(wake_, lock, next, stop, [&] { return changed_; });
    next_wake_ = SteadyTime::min();
  }
}

}  // namespace dogpile::detail
