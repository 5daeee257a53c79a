#!/usr/bin/env python3
"""Markdown tables of a benchmark label's CSV (written by asterisk-sim through bench/run).

    python3 bench/table.py bench/results/before.csv

When a (target, N) point was run more than once, the run with the least CPU used by other
processes during its window (other_cpu_pct) is shown: the machine is shared.
"""

import csv
import sys


def pick(path):
    best = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["target"], int(row["streams"]))
            other = float(row.get("other_cpu_pct") or 0)
            if key not in best or other < float(best[key].get("other_cpu_pct") or 0):
                best[key] = row
    return best


def table(rows, cols):
    print("| " + " | ".join(h for h, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f(r) for _, f in cols) + " |")
    print()


def col(key):
    return lambda r: r.get(key, "") or "–"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    best = pick(sys.argv[1])
    rows = [best[k] for k in sorted(best, key=lambda k: (k[1], k[0] != "service"))]
    table(
        rows,
        [
            ("relay", col("target")),
            ("N", col("streams")),
            ("carrying audio", col("flowing")),
            ("relay CPU % of a core", col("cpu_pct")),
            ("% per stream", col("cpu_pct_per_stream")),
            ("lost A→C", col("a2c_lost")),
            ("lost round trip", col("rt_lost")),
            ("A→C p50 ms", col("a2c_p50_ms")),
            ("A→C p99 ms", col("a2c_p99_ms")),
            ("C→A lateness p99 ms", col("c2a_late_p99_ms")),
            ("RSS KiB/stream", col("rss_kib_per_stream")),
            ("sim CPU %", col("sim_cpu_pct")),
            ("others' CPU %", col("other_cpu_pct")),
        ],
    )
    table(
        rows,
        [
            ("relay", col("target")),
            ("N", col("streams")),
            ("frames sent", col("frames_sent")),
            ("relayed frames", col("relayed_frames")),
            ("dup / ooo / foreign", lambda r: "/".join(
                str(int(r[a]) + int(r[b])) for a, b in
                [("a2c_dup", "rt_dup"), ("a2c_ooo", "rt_ooo"), ("a2c_foreign", "rt_foreign")])),
            ("round trip p50 ms", col("rtt_p50_ms")),
            ("ctx sw / frame (vol+invol)", lambda r: f"{r['ctx_per_frame']} ({r['vol_ctx_per_frame']}+{r['invol_ctx_per_frame']})"),
            ("read/write syscalls / frame", col("rw_syscalls_per_frame")),
            ("all syscalls / frame (perf)", col("syscalls_per_frame")),
            ("teardown s", col("teardown_s")),
            ("open s", col("open_s")),
        ],
    )
    service = {k[1]: v for k, v in best.items() if k[0] == "service"}
    floor = {k[1]: v for k, v in best.items() if k[0] == "floor"}
    print("| N | service CPU / floor CPU |")
    print("|---|---|")
    for n in sorted(set(service) & set(floor)):
        s, f = float(service[n]["cpu_pct"] or 0), float(floor[n]["cpu_pct"] or 0)
        print(f"| {n} | {s / f:.2f} |" if f else f"| {n} | – |")


if __name__ == "__main__":
    main()
