#!/usr/bin/env bash
# Builds everything and runs every test:
#   build/       unit, integration (real memcached processes) and demo tests;
#   build-tsan/  the unit and integration suites under ThreadSanitizer;
#   build-asan/  the unit and integration suites under AddressSanitizer,
#                LeakSanitizer and UndefinedBehaviorSanitizer;
#   build-fuzz/  the libFuzzer targets, DOGPILE_FUZZ_SECONDS (default 20) each.
# Any failure or sanitizer finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh docker-compose clang libclang-rt-14-dev nlohmann-json3-dev libmsgpack-cxx-dev \
  libprotobuf-dev protobuf-compiler
jobs=${DOGPILE_JOBS:-$(nproc)}

echo "== build and test (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

# The sanitizer builds use -O1: quicker to build, and their runs are I/O-bound.
sanitized() {
  local dir=$1 sanitizers=$2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DDOGPILE_SANITIZE="$sanitizers" -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_BENCH=OFF \
    -DDOGPILE_INSTALL=OFF >/dev/null
  cmake --build "$dir" -j "$jobs" --target dogpile_unit_tests dogpile_integration_tests
}

echo "== unit and integration tests under ThreadSanitizer (build-tsan/)"
sanitized build-tsan thread
# ThreadSanitizer cannot follow a process that has threads across fork() (it
# reports the child's first thread as a duplicate): the tests of fork() after
# use, named "... fork() ...", run in the other two builds. die_after_fork=0
# lets the other tests fork workers.
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 die_after_fork=0" \
  ctest --test-dir build-tsan -L "unit|integration" -E "^docker_compose|fork\\(\\)" --output-on-failure -j "$jobs"

echo "== unit and integration tests under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/)"
sanitized build-asan address,undefined
ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-asan -L "unit|integration" -E "^docker_compose" --output-on-failure -j "$jobs"

echo "== fuzzing (build-fuzz/)"
scripts/fuzz.sh "${DOGPILE_FUZZ_SECONDS:-20}"
