#include "flight.hpp"

#include <cstdint>
#include <functional>

namespace dogpile::detail {

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

std::size_t FlightTable::size() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    n += shard.flights.size();
  }
  return n;
}

void FlightTable::Lead::finish(Flight::Result result) noexcept {
  if (table_ == nullptr) return;
  {
    Shard& shard = table_->shard_for(key_);
    std::lock_guard lock(shard.mutex);
    shard.flights.erase(key_);
  }
  table_ = nullptr;
  flight_->complete(std::move(result));
}

}  // namespace dogpile::detail
