#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks that the code blocks of the README and docs/ marked as compiled really are.

A ```cpp block preceded by the line
    <!-- compiled in PATH -->
must appear in PATH line for line (leading white space aside, blank lines
and clang-format on/off switches skipped), as one consecutive run. Exits 1 and names every block that does not.
"""
import pathlib
import re
import sys

MARK = re.compile(r"<!-- compiled in (\S+) -->")


FORMATTER_SWITCHES = {"// clang-format off", "// clang-format on"}


def normalized(lines):
    return [line.strip() for line in lines
            if line.strip() and line.strip() not in FORMATTER_SWITCHES]


def contains_run(haystack, needle):
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def check(doc, root):
    """The marked blocks of one document: (checked, failures)."""
    lines = doc.read_text().splitlines()
    checked, failures = 0, []
    i = 0
    while i < len(lines):
        mark = MARK.search(lines[i])
        if mark and i + 1 < len(lines) and lines[i + 1].strip() == "```cpp":
            end = i + 2
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            block = normalized(lines[i + 2:end])
            source = normalized((root / mark.group(1)).read_text().splitlines())
            checked += 1
            if not contains_run(source, block):
                failures.append(f"{doc}:{i + 2}: block not found verbatim in {mark.group(1)}")
            i = end
        i += 1
    return checked, failures


def main(paths):
    """Paths are relative to the repository (this script's parent's parent)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    checked, failures = 0, []
    for path in paths:
        doc = pathlib.Path(path)
        if not doc.is_absolute():
            doc = root / doc
        n, f = check(doc, root)
        checked += n
        failures += f
    for f in failures:
        print(f)
    print(f"{checked} compiled snippets checked in {len(paths)} documents, {len(failures)} not found")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["README.md", "docs/guide.md", "docs/core-lock.md"]))
