// SPDX-License-Identifier: MIT
// Region options with errors kept off stderr: for tests that provoke errors
// on purpose and check them through stats() or their own handler.
#pragma once

#include "dogpile/region.hpp"

namespace dogpile::test {

inline RegionOptions quiet(RegionOptions o) {
  o.on_error = [](const ErrorEvent&) {};
  return o;
}

}  // namespace dogpile::test
