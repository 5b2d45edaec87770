#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every source, header, script and build file of the repository carries the
# license's SPDX line, and LICENSE is there. Prints each file that does not.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f LICENSE ] || { echo "LICENSE is missing"; exit 1; }
# One grep over every file that should carry the line: those that do not.
list_files() { git ls-files -z 2>/dev/null || find . -type f -not -path './build*' -print0; }
missing=$(list_files | grep -z -E '(\.(cpp|hpp|h|proto|sh|py|cmake|yml)|CMakeLists\.txt|^\.ci/run)$' |
  xargs -0 grep -L "SPDX-License-Identifier: MIT" || true)
if [ -n "$missing" ]; then
  echo "no SPDX line:"
  echo "$missing"
  exit 1
fi
