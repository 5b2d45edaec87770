// SPDX-License-Identifier: MIT
#include "engine/flight.hpp"

#include <cstdint>
#include <functional>
#include <new>

namespace dogpile::detail {

std::optional<Flight::Result> Flight::wait(const Clock& clock, SteadyTime deadline,
                                           std::stop_token stop) {
  std::unique_lock lock(mutex_);
  if (!clock.wait_until(done_cv_, lock, deadline, std::move(stop), [&] { return done_; })) {
    return std::nullopt;
  }
  return result_;
}

void Flight::on_complete(std::function<void(const Result&)> then) {
  {
    std::lock_guard lock(mutex_);
    if (!done_) {
      then_.push_back(std::move(then));
      return;
    }
  }
  then(result_);  // done: the result no longer changes
}

bool Flight::complete(Result result) {
  std::vector<std::function<void(const Result&)>> then;
  {
    std::lock_guard lock(mutex_);
    if (done_) return false;
    result_ = std::move(result);
    done_ = true;
    then.swap(then_);
  }
  done_cv_.notify_all();
  for (auto& f : then) f(result_);
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
  it->second = std::make_shared<Flight>();
  return {it->second, Lead(*this, key, it->second)};
}

std::optional<FlightTable::Lead> FlightTable::try_lead(const std::string& key) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  auto [it, inserted] = shard.flights.try_emplace(key);
  if (!inserted) return std::nullopt;
  it->second = std::make_shared<Flight>();
  return Lead(*this, key, it->second);
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
  table_->erase(key_, flight_);
  table_ = nullptr;
  flight_->complete(std::move(result));
}

}  // namespace dogpile::detail
