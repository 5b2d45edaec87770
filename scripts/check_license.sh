#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Every source, header, script and build file of the repository carries the
# license's SPDX line, and LICENSE is there. Prints each file that does not.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f LICENSE ] || { echo "LICENSE is missing"; exit 1; }
missing=0
while IFS= read -r f; do
  case "$f" in
    *.cpp | *.hpp | *.h | *.proto | *.sh | *.py | *.cmake | *CMakeLists.txt | *.yml | .ci/run) ;;
    *) continue ;;
  esac
  if ! head -n 3 "$f" | grep -q "SPDX-License-Identifier: MIT"; then
    echo "no SPDX line: $f"
    missing=1
  fi
done < <(git ls-files 2>/dev/null || find . -type f -not -path './build*' | sed 's|^\./||')
exit $missing
