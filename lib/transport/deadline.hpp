// The deadline of the region call the current thread is making (internal).
//
// The engine sets it for the length of a call; backends read it through
// request_deadline() to bound each request (and the wait for a connection),
// so that a slow or dripping server cannot hold a call past its deadline.
#pragma once

#include <chrono>
#include <optional>

#include "dogpile/backend.hpp"

namespace dogpile::detail {

using Steady = std::chrono::steady_clock;

/// The current thread's call deadline, if any.
[[nodiscard]] std::optional<Steady::time_point> request_deadline() noexcept;

/// Sets the current thread's call deadline for its lifetime (the earlier of
/// it and an enclosing one), restoring the previous one after.
class DeadlineScope {
 public:
  explicit DeadlineScope(std::optional<Steady::time_point> deadline) noexcept;
  ~DeadlineScope();
  DeadlineScope(const DeadlineScope&) = delete;
  DeadlineScope& operator=(const DeadlineScope&) = delete;

 private:
  std::optional<Steady::time_point> previous_;
};

}  // namespace dogpile::detail
