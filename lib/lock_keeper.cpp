#include "lock_keeper.hpp"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace dogpile::detail {

LockKeeper::LockKeeper(Report report) : report_(std::move(report)) {}

LockKeeper::~LockKeeper() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
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

LockKeeper::Ticket LockKeeper::keep(DistributedLock& lock, std::string key,
                                    Clock::duration interval) {
  std::lock_guard guard(mutex_);
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  entries_.push_back(Entry{&lock, std::move(key), interval, Clock::now() + interval});
  auto it = std::prev(entries_.end());
  wake_.notify_all();
  return Ticket(this, it);
}

LockKeeper::Clock::duration LockKeeper::interval_for(Ttl ttl) noexcept {
  const auto usable =
      std::max<Clock::duration>(ttl - std::chrono::seconds(1), std::chrono::milliseconds(500));
  return usable / 3;
}

void LockKeeper::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // Extensions run outside the mutex: one slow request must not hold up
    // creators that register or unregister their own locks meanwhile.
    std::vector<Entry*> due;
    for (Entry& e : entries_) {
      if (e.alive && e.due <= Clock::now()) {
        e.busy = true;
        due.push_back(&e);
      }
    }
    if (!due.empty()) {
      struct Outcome {
        bool lost = false;
        std::string error;
      };
      std::vector<Outcome> outcomes(due.size());
      lock.unlock();
      for (std::size_t i = 0; i < due.size(); ++i) {
        try {
          outcomes[i].lost = !due[i]->lock->extend();
        } catch (const std::exception& error) {
          outcomes[i].error = error.what();
        }
      }
      lock.lock();
      std::vector<std::pair<std::string, Outcome>> reports;
      for (std::size_t i = 0; i < due.size(); ++i) {
        Entry& e = *due[i];
        e.busy = false;
        e.due = Clock::now() + e.interval;
        if (outcomes[i].lost) e.alive = false;  // taken over: extending again cannot help
        if (outcomes[i].lost || !outcomes[i].error.empty()) {
          reports.emplace_back(e.key, std::move(outcomes[i]));
        }
      }
      extended_.notify_all();
      if (!reports.empty()) {
        lock.unlock();
        for (auto& [key, o] : reports) report_(key, o.lost, o.lost ? nullptr : o.error.c_str());
        lock.lock();
      }
      continue;
    }
    auto next = Clock::time_point::max();
    for (const Entry& e : entries_) {
      if (e.alive) next = std::min(next, e.due);
    }
    if (next == Clock::time_point::max()) {
      wake_.wait(lock);
    } else {
      wake_.wait_until(lock, next);
    }
  }
}

}  // namespace dogpile::detail
