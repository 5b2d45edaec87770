#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Regenerates bench/results/RESULTS.md and the plots: dogpile, raw
# libmemcached and dogpile.cache (the peer, from Debian packages) measured
# side by side against one memcached on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python3-dogpile.cache python3-pylibmc python3-matplotlib
jobs=${DOGPILE_JOBS:-$(nproc)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs" --target dogpile_bench
exec /usr/bin/python3 bench/run_all.py --bench build/bench/dogpile_bench --out bench/results "$@"
