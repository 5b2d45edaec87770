#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds everything and runs every test. Any failure or sanitizer finding
# fails the run.
#   build-asan/  every unit and integration test (both transports) under
#                AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer;
#   build-tsan/  the tests whose code runs threads, under ThreadSanitizer;
#   build/       the library, examples and benchmarks as shipped
#                (-O2, no debug information), with what needs a build without sanitizers:
#                the fork() tests, 250,000 keys through the multi calls,
#                the demo, the package and consumer builds, the compile-error,
#                README, license and API reference (Doxygen, no warning) checks;
#   build-fuzz/  the libFuzzer targets: their corpora replayed, then
#                DOGPILE_FUZZ_SECONDS (default 5) of fuzzing each (scripts/fuzz.sh 60: longer).
#
#   scripts/test.sh --quick    everyday work: one build without sanitizers
#                              (build-quick/), the unit, integration and fork()
#                              tests but those labelled slow.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
[ "${1:-}" = "--quick" ] && quick=true
scripts/setup.sh docker-compose clang libclang-rt-14-dev nlohmann-json3-dev libmsgpack-cxx-dev \
  libprotobuf-dev protobuf-compiler doxygen
jobs=${DOGPILE_JOBS:-$(nproc)}
# Most tests wait on servers, sleeps and timeouts: run twice as many as cores.
test_jobs=${DOGPILE_TEST_JOBS:-$((jobs * 2))}
started=$SECONDS
phase() { echo "== $1 (at $((SECONDS - started)) s)"; }

# Every build compiles in unity batches (CMAKE_UNITY_BUILD): quicker from
# scratch, the same code.
configure() {
  local dir=$1 build_type=$2 flags=$3
  shift 3
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$build_type" \
    -DCMAKE_CXX_FLAGS_"${build_type^^}"="$flags" -DCMAKE_UNITY_BUILD=ON "$@" >/dev/null
}

if $quick; then
  phase "quick: build (build-quick/)"
  configure build-quick Debug "-O0 -g1" -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_BENCH=OFF \
    -DDOGPILE_INSTALL=OFF
  cmake --build build-quick -j "$jobs"
  phase "quick: unit, integration and fork() tests but the slow ones"
  ctest --test-dir build-quick -L "unit|integration|plain" -LE slow --output-on-failure \
    -j "$test_jobs"
  phase "done"
  exit 0
fi

# The sanitizer builds are unoptimized (ASan) or lightly optimized (TSan, far
# slower without), with line tables only: quicker to build, and their runs
# wait on I/O more than they compute.
configure build-asan RelWithDebInfo "-O0 -g1" -DDOGPILE_SANITIZE=address,undefined \
  -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_BENCH=OFF -DDOGPILE_INSTALL=OFF
configure build-tsan RelWithDebInfo "-O1 -g1" -DDOGPILE_SANITIZE=thread \
  -DDOGPILE_TEST_SET=concurrency -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_BENCH=OFF \
  -DDOGPILE_INSTALL=OFF
configure build Release "-O2 -DNDEBUG" -DDOGPILE_TEST_SET=unsanitized

phase "build under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/)"
cmake --build build-asan -j "$jobs"

# While the ASan+UBSan run waits on servers and timeouts, the other builds
# go on beside it, at the lowest priority (their output: build-others.log),
# each marking its tree when done, so that its tests start as soon as it is
# built while the next one compiles.
phase "the other builds begin beside the tests (build-tsan/, build/, build-fuzz/)"
rm -f build-tsan/.built build/.built build-fuzz/.built build-others.failed
# A session of their own, so that a failure here stops them too.
setsid nice -n 19 bash -c "{ cmake --build build-tsan -j $jobs && touch build-tsan/.built &&
  cmake --build build -j $jobs && touch build/.built &&
  scripts/fuzz.sh --build && touch build-fuzz/.built; } || touch build-others.failed" \
  >build-others.log 2>&1 &
others=$!
trap 'kill -- -$others 2>/dev/null || true' EXIT
# Waits until tree $1 is built; fails if the builds stopped before it was.
built() {
  while [ ! -e "$1/.built" ]; do
    if [ -e build-others.failed ] || ! kill -0 "$others" 2>/dev/null; then
      [ -e "$1/.built" ] && return 0
      tail -60 build-others.log
      echo "test.sh: a build failed (build-others.log)" >&2
      exit 1
    fi
    sleep 1
  done
}
phase "unit and integration tests under ASan+UBSan"
ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-asan -L "unit|integration" --output-on-failure -j "$test_jobs"

phase "waiting for build-tsan/"
built build-tsan
phase "tests with threads under ThreadSanitizer, but the slow ones"
# die_after_fork=0 lets the tests fork worker processes.
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 die_after_fork=0" \
  ctest --test-dir build-tsan -L "unit|integration" -LE slow --output-on-failure -j "$test_jobs"

phase "waiting for build/"
built build
phase "fork() tests, 250,000 keys through the multi calls, demo, package, consumer and documentation checks (build/); fuzzing beside them (build-fuzz/)"
# The fuzzers (one core) run while these tests mostly wait on processes and
# servers; their output follows the tests'.
ctest --test-dir build -L "plain|demo|build" --output-on-failure -j "$test_jobs" &
build_tests=$!
trap 'kill -- -$others 2>/dev/null || true; kill "$build_tests" 2>/dev/null || true; wait "$build_tests" 2>/dev/null || true' EXIT
built build-fuzz
wait "$others" || true
trap 'kill "$build_tests" 2>/dev/null || true; wait "$build_tests" 2>/dev/null || true' EXIT
fuzz_status=0
scripts/fuzz.sh "${DOGPILE_FUZZ_SECONDS:-5}" >build-fuzz/fuzz.out 2>&1 || fuzz_status=$?
tests_status=0
wait "$build_tests" || tests_status=$?
trap - EXIT
phase "fuzzing (build-fuzz/), done beside those tests"
cat build-fuzz/fuzz.out
if [ "$tests_status" -ne 0 ] || [ "$fuzz_status" -ne 0 ]; then
  echo "test.sh: the build/ tests (status $tests_status) or the fuzzers ($fuzz_status) failed" >&2
  exit 1
fi
phase "done"
