#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the library alone (no tests, examples or benchmarks: seconds) and
# its Debian packages: libdogpile0.1 (the shared library) and libdogpile-dev
# (headers, the static library, the CMake package, dogpile.pc and
# dogpile-static.pc under /usr). Prints the .debs' paths.
#   scripts/package.sh [build-dir]     (default: build-package)
#   scripts/package.sh --from DIR      package a build configured and built
#                                      already (the tests package build/)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--from" ]; then
  build=$2
  # cpack installs what the build made; building `all` first (its default)
  # would build every test of that tree.
  (cd "$build" && cpack -G DEB -D CPACK_PACKAGING_INSTALL_PREFIX=/usr \
    -D CPACK_OUTPUT_FILE_PREFIX="$(pwd)/package" >&2)
  ls "$build"/package/*.deb
  exit 0
fi
scripts/setup.sh >&2
build=${1:-build-package}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDOGPILE_BUILD_TESTS=OFF \
  -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_BENCH=OFF -DDOGPILE_INSTALL=ON \
  -DCMAKE_INSTALL_PREFIX=/usr >&2
cmake --build "$build" -j "${DOGPILE_JOBS:-$(nproc)}" >&2
(cd "$build" && cpack -G DEB >&2)
ls "$build"/*.deb
