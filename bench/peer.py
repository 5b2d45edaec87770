#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The peer's side of dogpile's benchmarks: dogpile.cache with pylibmc (the
Debian packages python3-dogpile.cache and python3-pylibmc), against the same
memcached, printing `name value unit` lines like bench/dogpile_bench.

    peer.py hit        --server H:P --size BYTES [--ops N]
    peer.py throughput --server H:P --threads N [--milliseconds MS] [--keys N]
    peer.py herd       --server H:P --processes P --threads T --mode cold|stale
                       [--creator-ms MS] [--csv PATH]
    peer.py multi      --server H:P [--keys N] [--rounds N]
    peer.py memory     [--keys N]

Regions use the memcached backend's distributed lock (`distributed_lock`),
the configuration that keeps a herd of processes to one creator.
"""
import argparse
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time

import pylibmc
from dogpile.cache import make_region
from dogpile.cache.api import CachedValue


def figure(name, value, unit):
    print(f"{name} {value:.6g} {unit}", flush=True)


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100.0 * (len(v) - 1) + 0.5))]


def memcached_region(server, expiration=3600, lock_timeout=30):
    return make_region().configure(
        "dogpile.cache.pylibmc",
        expiration_time=expiration,
        arguments={
            "url": [server],
            "distributed_lock": True,
            "lock_timeout": lock_timeout,
            "binary": False,
            "behaviors": {"tcp_nodelay": True},
        },
    )


def bench_hit(a):
    region = memcached_region(a.server)
    value = "v" * a.size
    label = f"{a.size // 1024}KB" if a.size >= 1024 else f"{a.size}B"
    key = f"peer:hit:{a.size}"
    region.set(key, value)
    raw = pylibmc.Client([a.server], binary=False, behaviors={"tcp_nodelay": True})
    raw.set("peer:raw:" + key, value)
    creator = lambda: value  # noqa: E731
    for _ in range(500):
        region.get_or_create(key, creator)
        raw.get("peer:raw:" + key)
    blocks, per_block = 40, max(1, a.ops // 40)
    ours, theirs = [], []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            region.get_or_create(key, creator)
        ours.append((time.perf_counter() - t0) * 1e6 / per_block)
        t0 = time.perf_counter()
        for _ in range(per_block):
            raw.get("peer:raw:" + key)
        theirs.append((time.perf_counter() - t0) * 1e6 / per_block)
    figure(f"peer_hit_{label}", statistics.median(ours), "us")
    figure(f"peer_raw_hit_{label}", statistics.median(theirs), "us")


def bench_throughput(a):
    region = memcached_region(a.server)
    value = "v" * 100
    for k in range(a.keys):
        region.set(f"peer:tp:{k}", value)
    creator = lambda: value  # noqa: E731

    def run(duration):
        stop = threading.Event()
        counts = [0] * a.threads

        def worker(t):
            rng = random.Random(t)
            n = 0
            while not stop.is_set():
                region.get_or_create(f"peer:tp:{rng.randrange(a.keys)}", creator)
                n += 1
            counts[t] = n

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(a.threads)]
        for t in threads:
            t.start()
        time.sleep(duration)
        stop.set()
        for t in threads:
            t.join()
        return sum(counts) / duration

    run(0.2)
    rate = run(a.milliseconds / 1000.0)
    figure(f"peer_throughput_{a.threads}t", rate, "ops/s")


def bench_herd(a):
    callers = a.processes * a.threads
    key = f"peer:herd:{a.mode}:{a.processes}x{a.threads}:{os.getpid()}"
    expiration = 3600
    if a.mode == "stale":
        # dogpile.cache stores CachedValue(payload, {"ct": created, ...}); an
        # expired value is one whose "ct" is older than the expiration.
        writer = memcached_region(a.server, expiration=expiration)
        writer.set(key, "old value")
        raw = pylibmc.Client([a.server], binary=False)
        payload, metadata = raw.get(key)
        metadata = dict(metadata)
        metadata["ct"] = time.time() - 2 * expiration
        raw.set(key, CachedValue(payload, metadata))
    # Shared with the forked workers (shared memory and a semaphore each).
    ready = multiprocessing.Value("i", 0)
    go = multiprocessing.Value("i", 0, lock=False)
    creator_calls = multiprocessing.Value("i", 0)
    wrong = multiprocessing.Value("i", 0)
    latency_us = multiprocessing.Array("d", callers, lock=False)
    was_creator = multiprocessing.Array("i", callers, lock=False)

    def bump(counter):
        with counter.get_lock():
            counter.value += 1

    pids = []
    for p in range(a.processes):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                region = memcached_region(a.server, expiration=expiration, lock_timeout=30)

                def caller(t):
                    slot = p * a.threads + t
                    region.backend.client.get("warm-up")  # this thread's connection
                    bump(ready)
                    while not go.value:
                        time.sleep(0)
                    created = [False]

                    def creator():
                        created[0] = True
                        bump(creator_calls)
                        time.sleep(a.creator_ms / 1000.0)
                        return "new value"

                    t0 = time.perf_counter()
                    v = region.get_or_create(key, creator)
                    latency_us[slot] = (time.perf_counter() - t0) * 1e6
                    was_creator[slot] = 1 if created[0] else 0
                    if v not in ("new value", "old value") or (a.mode == "cold" and v != "new value"):
                        bump(wrong)

                threads = [threading.Thread(target=caller, args=(t,)) for t in range(a.threads)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            except Exception as e:  # noqa: BLE001
                print(f"peer herd worker: {e}", file=sys.stderr)
                code = 1
            os._exit(code)
        pids.append(pid)
    while ready.value < callers:
        time.sleep(0.001)
    time.sleep(0.05)
    go.value = 1
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit("peer herd worker failed")
    waits = [latency_us[i] / 1000.0 for i in range(callers)]
    others = [latency_us[i] / 1000.0 for i in range(callers) if not was_creator[i]]
    name = f"peer_herd_{a.mode}_{a.processes}x{a.threads}"
    figure(f"{name}_creator_calls", creator_calls.value, "calls")
    figure(f"{name}_wrong_values", wrong.value, "calls")
    if a.mode == "cold":
        figure(f"{name}_wait_p50", percentile(waits, 50), "ms")
        figure(f"{name}_wait_p99", percentile(waits, 99), "ms")
        figure(f"{name}_wait_max", max(waits), "ms")
        figure(f"{name}_wait_p99_over_creator", percentile(waits, 99) - a.creator_ms, "ms")
    else:
        figure(f"{name}_others_p50", percentile(others, 50), "ms")
        figure(f"{name}_others_p99", percentile(others, 99), "ms")
        figure(f"{name}_others_max", max(others) if others else 0.0, "ms")
    if a.csv:
        with open(a.csv, "w") as out:
            out.write("wait_ms,creator\n")
            for i in range(callers):
                out.write(f"{latency_us[i] / 1000.0},{was_creator[i]}\n")


def bench_multi(a):
    region = memcached_region(a.server)
    keys = [f"peer:multi:{k}" for k in range(a.keys)]
    value = "v" * 100
    creator = lambda *ks: [value] * len(ks)  # noqa: E731
    region.get_or_create_multi(keys, creator)
    single = lambda: value  # noqa: E731
    multi_us, singles_us = [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        region.get_or_create_multi(keys, creator)
        multi_us.append((time.perf_counter() - t0) * 1e6)
        t0 = time.perf_counter()
        for k in keys:
            region.get_or_create(k, single)
        singles_us.append((time.perf_counter() - t0) * 1e6)
    figure(f"peer_multi_{a.keys}_keys", statistics.median(multi_us), "us")
    figure(f"peer_singles_{a.keys}_keys", statistics.median(singles_us), "us")
    figure(f"peer_multi_ratio_{a.keys}_keys",
           statistics.median(multi_us) / statistics.median(singles_us), "x")


def rss_mb():
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") / 1048576.0


def bench_memory(a):
    # The null backend keeps nothing: every key is a miss, and what stays
    # behind is the region's own per-key state (its lock registry).
    region = make_region().configure("dogpile.cache.null")
    for i in range(1000):
        region.get_or_create(f"warm{i}", lambda: 1)
    before = rss_mb()
    for i in range(a.keys):
        region.get_or_create(f"key:{i}", lambda: i)
    after = rss_mb()
    figure("peer_memory_keys", a.keys, "keys")
    figure("peer_memory_registry_entries", len(region._lock_registry._values), "entries")
    figure("peer_memory_rss_growth", after - before, "MB")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["hit", "throughput", "herd", "multi", "memory"])
    parser.add_argument("--server", default="127.0.0.1:11211")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--milliseconds", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--mode", default="cold")
    parser.add_argument("--creator-ms", type=int, default=200)
    parser.add_argument("--csv", default="")
    parser.add_argument("--rounds", type=int, default=200)
    a = parser.parse_args()
    {"hit": bench_hit, "throughput": bench_throughput, "herd": bench_herd, "multi": bench_multi,
     "memory": bench_memory}[a.command](a)


if __name__ == "__main__":
    main()
