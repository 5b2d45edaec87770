#!/usr/bin/env bash
# Builds the library alone (no tests, examples or benchmarks: seconds) and a
# Debian package of it: headers, the static library, the CMake package and
# dogpile.pc under /usr. Prints the .deb's path.
#   scripts/package.sh [build-dir]     (default: build-package)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
build=${1:-build-package}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDOGPILE_BUILD_TESTS=OFF \
  -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_BENCH=OFF -DDOGPILE_INSTALL=ON \
  -DCMAKE_INSTALL_PREFIX=/usr >&2
cmake --build "$build" -j "${DOGPILE_JOBS:-$(nproc)}" >&2
(cd "$build" && cpack -G DEB >&2)
ls "$build"/*.deb
