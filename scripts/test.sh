#!/usr/bin/env bash
# Builds everything and runs every test: the unit and integration suites,
# then the unit suite again under ThreadSanitizer (the concurrency tests) and
# under AddressSanitizer + UndefinedBehaviorSanitizer (the byte-level code).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=${DOGPILE_JOBS:-$(nproc)}

echo "== build and test (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

echo "== unit tests under ThreadSanitizer (build-tsan/)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOGPILE_SANITIZE=thread \
  -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_INSTALL=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target dogpile_unit_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan -L unit --output-on-failure -j "$jobs"

echo "== unit tests under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDOGPILE_SANITIZE=address,undefined \
  -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_INSTALL=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target dogpile_unit_tests
ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-asan -L unit --output-on-failure -j "$jobs"
