// SPDX-License-Identifier: MIT
// How much later than its bound a test lets something end in a sanitized
// build (tests).
#pragma once

namespace dogpile::test {

/// Under scripts/test.sh the sanitized trees' tests share two cores with the
/// other trees' builds, and a ready thread has waited 100-150 ms for one
/// there (measured: a request stalled on purpose ended 632 ms after a 500 ms
/// timeout). Bounds on how soon something ends add this in those builds; the
/// unsanitized builds (scripts/test.sh --quick) check the bounds as stated.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr double kSchedulingSlackMs = 250;
#else
inline constexpr double kSchedulingSlackMs = 0;
#endif

}  // namespace dogpile::test
