#!/usr/bin/env bash
# Builds and runs the demo: the same service-like workload with and without a
# dogpile lock. Extra arguments go to the demo (see --help in examples/demo.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=${DOGPILE_JOBS:-$(nproc)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs" --target dogpile_demo
exec build/examples/dogpile_demo "$@"
