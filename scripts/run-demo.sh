#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs a built demo binary against a memcached started here, on a free
# loopback port, and stops that memcached afterwards. Without a memcached
# binary, runs the demo on its in-process backend (it says so).
#   scripts/run-demo.sh path/to/dogpile_demo [demo options...]
set -euo pipefail
demo=$1
shift

memcached_bin=$(command -v memcached || true)
[ -n "$memcached_bin" ] || [ ! -x /usr/bin/memcached ] || memcached_bin=/usr/bin/memcached
if [ -z "$memcached_bin" ]; then
  echo "memcached is not installed: the demo falls back to its in-process backend."
  exec "$demo" "$@"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_user=()
[ "$(id -u)" -ne 0 ] || as_user=(-u nobody)  # memcached refuses to run as root
"$memcached_bin" -l 127.0.0.1 -p "$port" -U 0 -m 64 -t 2 -c 4096 "${as_user[@]}" &
memcached_pid=$!
trap 'kill "$memcached_pid" 2>/dev/null || true; wait "$memcached_pid" 2>/dev/null || true' EXIT

for _ in $(seq 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 "$memcached_pid" 2>/dev/null || { echo "memcached did not start" >&2; exit 1; }
  sleep 0.05
done
echo "Started memcached on 127.0.0.1:$port for the demo (pid $memcached_pid)."
"$demo" --memcached "--SERVER=127.0.0.1:$port" "$@"
