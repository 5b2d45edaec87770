// Releases: a lease ended after its creation, and one whose release failed
// tried again until it succeeds or would have expired.
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

void Engine::release_later(std::vector<std::unique_ptr<DistributedLock>> locks) {
  auto pending = std::make_shared<Unreleased>();
  pending->locks = std::move(locks);
  const SteadyTime give_up = clock_.steady_now() + lifetimes_.release_retries();
  constexpr auto kFirst = std::chrono::milliseconds(100);
  auto next = std::make_shared<Duration>(kFirst);
  auto tries = std::make_shared<int>(0);
  keeper_.schedule(kFirst, [this, pending, give_up, next, tries]() -> std::optional<Duration> {
    auto& locks = pending->locks;
    const auto pass_ends = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    for (auto it = locks.begin();
         it != locks.end() && std::chrono::steady_clock::now() < pass_ends;) {
      const Request bounded{.deadline =
                                std::chrono::steady_clock::now() + std::chrono::milliseconds(250)};
      try {
        metrics_.backend(BackendOp::release, "", 1, [&] { (*it)->release(bounded); });
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

}  // namespace dogpile::detail
