#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds and runs the demo: the same service-like workload with and without
# dogpile, across several processes sharing a memcached that this script
# starts on a loopback port. Extra arguments go to the demo (see
# examples/demo.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=${DOGPILE_JOBS:-$(nproc)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs" --target dogpile_demo
exec scripts/run-demo.sh build/examples/dogpile_demo "$@"
