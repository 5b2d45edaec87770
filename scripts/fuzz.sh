#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (and ASan + UBSan) and runs
# each for SECONDS (default: $DOGPILE_FUZZ_SECONDS, else 60), starting from a
# copy of the seed corpus in fuzz/corpus/. Fails on any crash or finding.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${DOGPILE_FUZZ_SECONDS:-60}}
scripts/setup.sh clang libclang-rt-14-dev
out=build-fuzz
mkdir -p "$out"
for target in envelope keys meta; do
  case "$target" in
    meta) sources=(lib/meta_protocol.cpp) libs=() ;;
    *) sources=(lib/envelope.cpp lib/keys.cpp lib/sha256.cpp lib/lock_item.cpp
                lib/lock_token.cpp lib/invalidation_times.cpp) libs=(-lzstd) ;;
  esac
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Iinclude "fuzz/fuzz_$target.cpp" "${sources[@]}" \
    -o "$out/fuzz_$target" "${libs[@]}"
  corpus="$out/corpus_$target"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$target"/* "$corpus"/
  echo "== fuzz_$target for ${seconds}s"
  if ! "$out/fuzz_$target" -max_total_time="$seconds" -print_final_stats=1 "$corpus" \
      > "$out/fuzz_$target.log" 2>&1; then
    tail -40 "$out/fuzz_$target.log"
    echo "fuzz_$target found a failure (input saved in $(pwd))" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/fuzz_$target.log"
  echo "corpus: $(ls "$corpus" | wc -l) inputs"
done
