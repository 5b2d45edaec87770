#!/usr/bin/python3
"""Runs every benchmark, ours and the peer's, against one memcached started
here on a free loopback port, and writes bench/results/RESULTS.md and PNG plots.

    run_all.py --bench build/bench/dogpile_bench [--out bench/results]

Each figure is measured side by side in this one run: dogpile, raw
libmemcached (inside dogpile_bench), and dogpile.cache + pylibmc (peer.py).
"""
import argparse
import csv
import datetime
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_memcached():
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    port = free_port()
    args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "1024", "-t", "2",
            "-c", "8192"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]  # memcached refuses to run as root
    proc = subprocess.Popen(args)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("memcached did not start")


class Runner:
    def __init__(self, bench, server, out):
        self.bench, self.server, self.out = bench, server, out
        self.figures = {}

    def run(self, program, *args):
        cmd = ([self.bench] if program == "ours" else ["/usr/bin/python3", str(HERE / "peer.py")])
        cmd += list(args)
        if "memory" not in args:
            cmd += ["--server", self.server]
        started = time.time()
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}")
        for line in result.stdout.splitlines():
            name, value, unit = line.split()
            self.figures[name] = (float(value), unit)
            print(f"  {name:48} {float(value):>14.6g} {unit}", flush=True)
        print(f"  ({' '.join(cmd[-8:])}: {time.time() - started:.1f} s)", flush=True)


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "ops/s":
        return f"{value:,.0f} ops/s"
    if unit in ("calls", "entries", "keys"):
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "us":
        return f"{value:,.1f} us"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:,.1f} MB"
    return f"{value:g} {unit}"


def write_results(r, out, elapsed):
    f = r.figures

    def get(name):
        return f.get(name, (None, ""))[0]

    def cell(name):
        value, unit = f.get(name, (None, ""))
        return fmt(value, unit)

    rows = []  # (figure, ours, raw, peer, ratio, target, met)

    def row(figure, ours, raw, peer, ratio, target, met):
        rows.append((figure, ours, raw, peer, ratio, target, "yes" if met else "**no**"))

    for size in ("100B", "10KB"):
        ratio = get(f"hit_ratio_{size}")
        row(f"fresh hit, {size} value (median per call)", cell(f"hit_dogpile_{size}"),
            cell(f"hit_raw_{size}"), cell(f"peer_hit_{size}"), fmt(ratio, "x"),
            "<= 1.05x raw", ratio is not None and ratio <= 1.05)
    for t in (1, 2, 8, 32):
        ratio = get(f"throughput_ratio_{t}t")
        row(f"throughput, {t} thread{'s' if t > 1 else ''}, 1,000 hot keys",
            cell(f"throughput_dogpile_{t}t"), cell(f"throughput_raw_{t}t"),
            cell(f"peer_throughput_{t}t"), fmt(ratio, "x"), ">= 0.95x raw",
            ratio is not None and ratio >= 0.95)
    for shape in ("4x16", "8x32"):
        n = f"herd_cold_{shape}"
        calls = get(f"{n}_creator_calls")
        over = get(f"{n}_wait_p99_over_creator")
        row(f"cold herd {shape}, creator 200 ms: creator calls", cell(f"{n}_creator_calls"), "-",
            cell(f"peer_{n}_creator_calls"), "-", "exactly 1", calls == 1)
        row(f"cold herd {shape}: wait p50 / p99 / max",
            f"{cell(n + '_wait_p50')} / {cell(n + '_wait_p99')} / {cell(n + '_wait_max')}", "-",
            f"{cell('peer_' + n + '_wait_p50')} / {cell('peer_' + n + '_wait_p99')} / "
            f"{cell('peer_' + n + '_wait_max')}", "-", "-", True)
        row(f"cold herd {shape}: wait p99 over the creator's 200 ms", cell(f"{n}_wait_p99_over_creator"),
            "-", cell(f"peer_{n}_wait_p99_over_creator"), "-", "<= 25 ms",
            over is not None and over <= 25)
        s = f"herd_stale_{shape}"
        calls = get(f"{s}_creator_calls")
        ratio = get(f"{s}_others_p99_over_raw")
        row(f"stale herd {shape}: creator calls", cell(f"{s}_creator_calls"), "-",
            cell(f"peer_{s}_creator_calls"), "-", "exactly 1", calls == 1)
        row(f"stale herd {shape}: non-winners' p50 / p99 / max",
            f"{cell(s + '_others_p50')} / {cell(s + '_others_p99')} / {cell(s + '_others_max')}",
            f"p99 {cell(s + '_raw_get_p99')} (same herd, one raw get each)",
            f"{cell('peer_' + s + '_others_p50')} / {cell('peer_' + s + '_others_p99')} / "
            f"{cell('peer_' + s + '_others_max')}", fmt(ratio, "x"), "p99 <= 3x raw",
            ratio is not None and ratio <= 3)
    ratio = get("multi_ratio_100_keys")
    row("get_or_create_multi, 100 fresh keys, vs 100 single calls",
        f"{cell('multi_100_keys')} vs {cell('singles_100_keys')}", "-",
        f"{cell('peer_multi_100_keys')} vs {cell('peer_singles_100_keys')} "
        f"({cell('peer_multi_ratio_100_keys')})", fmt(ratio, "x"), "<= 0.1x",
        ratio is not None and ratio <= 0.1)
    entries = get("memory_registry_entries")
    growth = get("memory_rss_growth")
    row("1,000,000 distinct keys through one process: registry entries after",
        cell("memory_registry_entries"), "-", cell("peer_memory_registry_entries"), "-", "0",
        entries == 0)
    row("1,000,000 distinct keys: RSS growth", cell("memory_rss_growth"), "-",
        cell("peer_memory_rss_growth"), "-", "< 20 MB", growth is not None and growth < 20)
    for ms in (200, 5000):
        for setup, label, limit in (("no_history", "no history", 60),
                                    ("history_one_host", "history, one host's clock", 20),
                                    ("history_measured_clocks",
                                     "history, clocks measured against memcached's", 20)):
            n = f"waiting_{ms}ms_{setup}"
            polls = get(n + "_polls")
            late = get(n + "_late")
            target = f"<= {limit} polls" + (", <= 10 ms late" if setup != "no_history" else "")
            met = polls is not None and polls <= limit and (
                setup == "no_history" or (late is not None and late <= 10))
            row(f"a process waiting on a {ms / 1000:g} s creation, {label}: polls, seen after store",
                f"{cell(n + '_polls')} polls, {cell(n + '_late')}", "-", "-", "-", target, met)

    lines = [
        "# Benchmark results",
        "",
        f"Generated by `scripts/bench.sh` on {datetime.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, {platform.platform(terse=True)}) "
        f"in {elapsed:.0f} s. One memcached on loopback served every figure; the columns of a row "
        "were measured side by side in this run. \"raw\" is libmemcached's `memcached_get` on a "
        "pooled connection with the same option string as `MemcachedBackend` (the value copied "
        "into a `std::string`); \"peer\" is dogpile.cache 1.1 with pylibmc and its distributed "
        "memcached lock (Debian packages). Ratios are dogpile / raw.",
        "",
        "| figure | dogpile | raw libmemcached | dogpile.cache (peer) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for rw in rows:
        lines.append("| " + " | ".join(rw) + " |")
    lines += [
        "",
        "Plots: [herd waits](herd_waits.png), [throughput](throughput.png).",
        "",
        "How each figure is measured (`bench/dogpile_bench.cpp`, `bench/peer.py`):",
        "",
        "- fresh hit: 40 alternating blocks of dogpile and raw calls on one thread; the median "
        "per-call time of each.",
        "- throughput: N threads calling as fast as they can on 1,000 keys (100 B values), in 20 "
        "alternating slices of dogpile and raw (150 ms each); medians of the slices' rates, and "
        "the median of the slices' ratios. The peer runs one 2 s slice.",
        "- herds: P processes x T threads released together on one key; cold = no value, "
        "stale = a value expired 30 s ago. The raw column of the stale herd is the same herd "
        "doing one raw get each. Waits include connection checks and scheduling of P x T "
        "threads on this machine's cores.",
        "- multi: one `get_or_create_multi` of 100 fresh keys against 100 `get_or_create` calls, "
        "median of 200 rounds (the peer: 50).",
        "- memory: a backend that stores nothing, so every key does the full cold path "
        "(flight, lock, creation); RSS of the process before and after (the peer: dogpile.cache's "
        "null backend).",
        "- waiting: one region creates a value (200 ms or 5 s) while another, in the same "
        "process, waits for it; its polls (one request each) and how long after the store it "
        "had the value. History: the key's last creation took as long (its lock says so). "
        "Clocks: this host's (clock_sync off, as on one host), or measured against memcached's "
        "after 10 s of refinement (as long-lived hosts of a fleet have them).",
        "",
    ]
    (out / "RESULTS.md").write_text("\n".join(lines))
    return rows


def plot(out, r):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (mode, shape) in zip(axes.flat, [("cold", "4x16"), ("cold", "8x32"),
                                            ("stale", "4x16"), ("stale", "8x32")]):
        for who, label in (("dogpile", "dogpile"), ("peer", "dogpile.cache")):
            path = out / f"herd_{mode}_{shape}_{who}.csv"
            if not path.exists():
                continue
            with path.open() as f:
                waits = sorted(float(row["wait_ms"]) for row in csv.DictReader(f))
            ys = [(i + 1) / len(waits) for i in range(len(waits))]
            ax.step(waits, ys, where="post", label=label)
        ax.set_title(f"{mode} herd {shape}, creator 200 ms")
        ax.set_xlabel("wait (ms, log scale)")
        ax.set_ylabel("callers (cumulative fraction)")
        ax.set_xscale("log")
        ticks = [150, 200, 300, 500, 1000, 2000, 5000] if mode == "cold" else [0.1, 1, 10, 100, 300]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "herd_waits.png", dpi=100)
    plt.close(fig)

    threads = [1, 2, 8, 32]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prefix, label in (("throughput_dogpile", "dogpile"), ("throughput_raw", "raw libmemcached"),
                          ("peer_throughput", "dogpile.cache")):
        ys = [r.figures.get(f"{prefix}_{t}t", (None, ""))[0] for t in threads]
        ax.plot(threads, ys, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads, [str(t) for t in threads])
    ax.set_xlabel("threads")
    ax.set_ylabel("calls per second (fresh hits)")
    ax.set_ylim(bottom=0)
    ax.set_title("throughput on 1,000 hot keys")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True)
    parser.add_argument("--out", default=str(HERE / "results"))
    a = parser.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    memcached, server = start_memcached()
    try:
        r = Runner(a.bench, server, out)
        print(f"memcached at {server}")
        for size in ("100", "10240"):
            r.run("ours", "hit", "--size", size, "--ops", "20000")
            r.run("peer", "hit", "--size", size, "--ops", "10000")
        for t in ("1", "2", "8", "32"):
            r.run("ours", "throughput", "--threads", t, "--milliseconds", "3000")
            r.run("peer", "throughput", "--threads", t, "--milliseconds", "2000")
        for mode in ("cold", "stale"):
            for p, t in (("4", "16"), ("8", "32")):
                shape = f"{p}x{t}"
                r.run("ours", "herd", "--processes", p, "--threads", t, "--mode", mode,
                      "--csv", str(out / f"herd_{mode}_{shape}_dogpile.csv"))
                r.run("peer", "herd", "--processes", p, "--threads", t, "--mode", mode,
                      "--csv", str(out / f"herd_{mode}_{shape}_peer.csv"))
        r.run("ours", "multi", "--keys", "100", "--rounds", "200")
        r.run("peer", "multi", "--keys", "100", "--rounds", "50")
        r.run("ours", "memory", "--keys", "1000000")
        for ms in ("200", "5000"):
            r.run("ours", "waiting", "--creator-ms", ms)
        r.run("peer", "memory", "--keys", "1000000")
    finally:
        memcached.terminate()
        memcached.wait()
    rows = write_results(r, out, time.time() - started)
    plot(out, r)
    print()
    print((out / "RESULTS.md").read_text())
    missed = [rw[0] for rw in rows if rw[6] != "yes"]
    print(f"{len(rows) - len(missed)} of {len(rows)} targets met" +
          (": missed " + "; ".join(missed) if missed else ""))


if __name__ == "__main__":
    main()
