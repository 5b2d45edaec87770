#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets in fuzz/ with clang (and ASan + UBSan), replays
# each one's seed corpus (fuzz/corpus/), then fuzzes each for SECONDS
# (default: $DOGPILE_FUZZ_SECONDS, else 60) from a copy of it. Fails on any
# crash or finding. A target newer than its sources is not built again.
#   scripts/fuzz.sh [SECONDS]
#   scripts/fuzz.sh --build       build only
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=false
if [ "${1:-}" = "--build" ]; then
  build_only=true
  shift
fi
seconds=${1:-${DOGPILE_FUZZ_SECONDS:-60}}
scripts/setup.sh clang libclang-rt-14-dev
out=build-fuzz
mkdir -p "$out"
flags=(-std=c++20 -O1 -g1 -fsanitize=address,undefined -fno-sanitize-recover=all -Iinclude -Ilib)
mkdir -p "$out/obj"
declare -A compiled=()
wire=(lib/transport/wire_client.cpp lib/transport/journal.cpp lib/transport/connection.cpp lib/base/fork.cpp lib/transport/ketama.cpp lib/transport/md5.cpp lib/transport/backend.cpp)
for target in envelope keys meta text; do
  case "$target" in
    meta) sources=(lib/transport/meta/meta_protocol.cpp lib/transport/meta/meta_batch.cpp
                lib/format/keys.cpp lib/format/sha256.cpp "${wire[@]}") libs=(-lfmt) ;;
    text) sources=(lib/transport/classic/text_protocol.cpp lib/transport/classic/text_batch.cpp lib/format/keys.cpp lib/format/sha256.cpp "${wire[@]}")
          libs=(-lfmt) ;;
    *) sources=(lib/format/envelope.cpp lib/format/keys.cpp lib/format/sha256.cpp lib/format/lock_item.cpp
                lib/format/lock_token.cpp lib/format/invalidation_times.cpp) libs=(-lzstd) ;;
  esac
  binary="$out/fuzz_$target"
  stale=true
  if [ -e "$binary" ]; then
    stale=false
    for f in "fuzz/fuzz_$target.cpp" "${sources[@]}" lib/*/*.hpp lib/transport/*/*.hpp include/dogpile/*.hpp \
        include/dogpile/detail/*.hpp; do
      [ "$f" -nt "$binary" ] && stale=true
    done
  fi
  if $stale; then
    # Each source is compiled once a run, whichever targets share it.
    objects=()
    for source in "${sources[@]}"; do
      object="$out/obj/${source//\//_}.o"
      if [ -z "${compiled[$object]:-}" ]; then
        clang++ "${flags[@]}" -fsanitize=fuzzer-no-link -c "$source" -o "$object"
        compiled[$object]=1
      fi
      objects+=("$object")
    done
    clang++ "${flags[@]}" -fsanitize=fuzzer "fuzz/fuzz_$target.cpp" "${objects[@]}" -o "$binary" \
      "${libs[@]}"
  fi
  $build_only && continue
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
