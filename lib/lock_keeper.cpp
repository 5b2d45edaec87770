#include "lock_keeper.hpp"

#include <algorithm>
#include <exception>

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
    // Extensions run under the mutex, so none is in progress once it is held.
    std::lock_guard lock(keeper_->mutex_);
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
  return usable / 2;
}

void LockKeeper::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    auto next = Clock::time_point::max();
    const auto now = Clock::now();
    for (Entry& e : entries_) {
      if (!e.alive) continue;
      if (e.due <= now) {
        // Under the mutex: a Ticket being destroyed waits for this extension.
        try {
          if (!e.lock->extend()) {
            e.alive = false;  // taken over: extending again cannot help
            report_(e.key, true, nullptr);
          }
        } catch (const std::exception& error) {
          report_(e.key, false, error.what());
        }
        e.due = Clock::now() + e.interval;
      }
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
