// SPDX-License-Identifier: MIT
// Releases: the leases a call ends; one whose release failed goes to the
// chores (engine/chores.hpp), to be tried again.
#include "engine/engine.hpp"

#include <algorithm>
#include <utility>

#include "engine/parts.hpp"

namespace dogpile::detail {

void Engine::release(std::span<Slot* const> slots, const Request& request) {
  std::vector<Slot*> held;
  for (Slot* s : slots) {
    if (s->lease.lock) held.push_back(s);
  }
  if (held.empty()) return;
  std::vector<LeaseEnd> ends(held.size());
  for (std::size_t i = 0; i < held.size(); ++i)
    ends[i] = LeaseEnd{.key = held[i]->key, .lease = &held[i]->lease};
  attempt(
      "release lock", held.front()->user_key,
      [&] {
        metrics_.backend(BackendOp::release, held.front()->user_key, held.size(),
                         [&] { backend_->release(ends, request); });
      },
      "; tried again in the background");
  std::vector<std::unique_ptr<DistributedLock>> unreleased;
  for (std::size_t i = 0; i < held.size(); ++i) {
    Slot* s = held[i];
    if (ends[i].lost) {
      detail::Counters::add(counters_.locks_lost);
      reporter_.report(ErrorKind::lock, "release lock", s->user_key,
                       "the lock was gone before it was released (expired, evicted or flushed); "
                       "another caller may have created the value as well");
    }
    if (s->lease.lock && s->lease.lock->held()) unreleased.push_back(std::move(s->lease.lock));
    s->lease.lock.reset();
  }
  chores_.release_later(std::move(unreleased), lifetimes_.release_retries());
}

}  // namespace dogpile::detail
