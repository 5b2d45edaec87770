#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The API reference from the public headers: build-docs/html/index.html.
# Fails on any Doxygen warning (a broken reference, a bad command).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh doxygen
out=${1:-build-docs}
mkdir -p "$out"
(cat docs/api/Doxyfile; echo "OUTPUT_DIRECTORY = $out") | doxygen -
echo "API reference: $out/html/index.html"
