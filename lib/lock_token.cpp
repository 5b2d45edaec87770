#include "lock_token.hpp"

#include <fmt/format.h>

#include <random>

namespace dogpile::detail {

std::string new_lock_token() {
  thread_local std::mt19937_64 generator = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  const auto high = generator();
  const auto low = generator();
  return fmt::format("{:016x}{:016x}", high, low);
}

}  // namespace dogpile::detail
