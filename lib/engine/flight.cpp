// SPDX-License-Identifier: MIT
#include "engine/flight.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <vector>

namespace dogpile::detail {

std::optional<Flight::Result> Flight::wait(const Clock& clock, SteadyTime deadline,
                                           std::stop_token stop) {
  std::unique_lock lock(mutex_);
  if (!clock.wait_until(done_cv_, lock, deadline, std::move(stop), [&] { return done_; })) {
    return std::nullopt;
  }
  return result_;
}

void Flight::on_complete(std::shared_ptr<Waiter> waiter, const void* runs_on) {
  {
    std::lock_guard lock(mutex_);
    if (!done_) {
      then_.push_back(Waiting{std::move(waiter), runs_on});
      return;
    }
  }
  // Done: the result no longer changes.
  if (waiter->claim(result_)) waiter->post([waiter] { waiter->run(); });
}

namespace {
// Runs waiters alike in order, in a turn of their own: each one claimed
// (the first is, by whoever posted this), then run. One whose run throws
// (a caller's completion handler, run in place) leaves by the loop as any
// handler's exception does; the rest are posted again first, by the next
// one that is claimed.
struct Wake {
  std::shared_ptr<std::vector<Flight::Waiting>> waiting;
  std::size_t from;  // claimed already
  Flight::Result result;

  // Posts the waiters from `i` on, by the first of them still waiting.
  static void post(const std::shared_ptr<std::vector<Flight::Waiting>>& waiting, std::size_t i,
                   const Flight::Result& result) {
    for (; i < waiting->size(); ++i) {
      auto& w = (*waiting)[i].waiter;
      if (w->claim(result)) {
        w->post(Wake{waiting, i, result});
        return;
      }
      w.reset();
    }
  }

  void operator()() const {
    for (std::size_t i = from; i < waiting->size(); ++i) {
      const std::shared_ptr<Flight::Waiter> w = std::move((*waiting)[i].waiter);  // goes once run
      if (i != from && !w->claim(result)) continue;
      try {
        w->run();
      } catch (...) {
        post(waiting, i + 1, result);
        throw;
      }
    }
  }
};
}  // namespace

bool Flight::complete(Result result) {
  std::vector<Waiting> waiting;
  {
    std::lock_guard lock(mutex_);
    if (done_) return false;
    result_ = std::move(result);
    done_ = true;
    waiting.swap(then_);
  }
  done_cv_.notify_all();
  // One post for the waiters alike (a herd on one I/O thread: one), each
  // in the order they came.
  while (!waiting.empty()) {
    const void* runs_on = waiting.front().runs_on;
    auto alike = std::make_shared<std::vector<Waiting>>();
    if (std::all_of(waiting.begin(), waiting.end(),
                    [&](const Waiting& w) { return w.runs_on == runs_on; })) {
      alike->swap(waiting);
    } else {
      std::erase_if(waiting, [&](Waiting& w) {
        if (w.runs_on != runs_on) return false;
        alike->push_back(std::move(w));
        return true;
      });
    }
    Wake::post(alike, 0, result_);
  }
  return true;
}

FlightTable::Shard& FlightTable::shard_for(std::string_view key) noexcept {
  const auto mixed =
      static_cast<std::uint64_t>(std::hash<std::string_view>{}(key)) * 0x9E3779B97F4A7C15ull;
  return shards_[mixed >> 60];
}

std::pair<std::shared_ptr<Flight>, std::optional<FlightTable::Lead>> FlightTable::join(
    const std::string& key) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  auto [it, inserted] = shard.flights.try_emplace(key);
  if (!inserted) return {it->second, std::nullopt};
  it->second = std::make_shared<Flight>(key);
  return {it->second, Lead(*this, it->second)};
}

std::optional<FlightTable::Lead> FlightTable::try_lead(const std::string& key) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  auto [it, inserted] = shard.flights.try_emplace(key);
  if (!inserted) return std::nullopt;
  it->second = std::make_shared<Flight>(key);
  return Lead(*this, it->second);
}

void FlightTable::erase(const std::string& key, const std::shared_ptr<Flight>& flight) noexcept {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  // Only this flight: after a detach, the key may already lead a new one.
  if (auto it = shard.flights.find(key); it != shard.flights.end() && it->second == flight) {
    shard.flights.erase(it);
  }
}

void FlightTable::detach(const std::string& key, const std::shared_ptr<Flight>& flight) {
  erase(key, flight);
  flight->complete({});
}

std::size_t FlightTable::size() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.flights.size();
  }
  return n;
}

void FlightTable::reset_after_fork() noexcept {
  for (auto& shard : shards_) {
    new (&shard.mutex) std::mutex;  // may have been held by a thread of the parent
    // The flights are the parent's: leak them (their followers do not exist here).
    new (&shard.flights) std::unordered_map<std::string, std::shared_ptr<Flight>>();
  }
}

void FlightTable::Lead::finish(Flight::Result result) noexcept {
  if (table_ == nullptr) return;
  table_->erase(flight_->key(), flight_);
  table_ = nullptr;
  flight_->complete(std::move(result));
}

}  // namespace dogpile::detail
