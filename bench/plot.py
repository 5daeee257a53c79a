#!/usr/bin/env python3
"""Plots of benchmark labels' CSVs (written by asterisk-sim through bench/run).

    python3 bench/plot.py bench/results/before.csv
    python3 bench/plot.py bench/results/before.csv bench/results/after.csv

With one CSV, writes next to it <label>-cpu.png (relay CPU per stream vs N, service and floor)
and <label>-latency.png (Asterisk->client p99 and client->Asterisk lateness p99 vs N). With
several, draws them together (each series named by its label) into
<first label>-vs-<last label>-cpu.png and -latency.png.
Needs matplotlib (pip install matplotlib).
"""

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    """Rows by target; of repeated (target, N) runs, the one least disturbed by others."""
    best = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["target"], row["streams"])
            other = float(row.get("other_cpu_pct") or 0)
            if key not in best or other < float(best[key].get("other_cpu_pct") or 0):
                best[key] = row
    rows = {}
    for (target, _), row in best.items():
        rows.setdefault(target, []).append(row)
    for target in rows:
        rows[target].sort(key=lambda r: int(r["streams"]))
    return rows


def series(rows, key):
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(int(r["streams"]))
            ys.append(float(r[key]))
    return xs, ys


def lossy(rows, key):
    """Points of runs that lost frames: the machine was saturated there."""
    xs, ys = [], []
    for r in rows:
        lost = int(r.get("a2c_lost") or 0) + int(r.get("rt_lost") or 0)
        if lost > 0 and r.get(key) not in (None, ""):
            xs.append(int(r["streams"]))
            ys.append(float(r[key]))
    return xs, ys


def mark_lossy(ax, data, keys):
    first = True
    for rows in data.values():
        for key in keys:
            xs, ys = lossy(rows, key)
            if xs:
                ax.scatter(xs, ys, marker="x", s=90, color="red", zorder=5,
                           label="run lost frames (saturated)" if first else None)
                first = False


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit(__doc__)
    labels = [os.path.basename(os.path.splitext(p)[0]) for p in paths]
    folder = os.path.dirname(paths[0])
    name = labels[0] if len(paths) == 1 else f"{labels[0]}-vs-{labels[-1]}"
    base = os.path.join(folder, name)
    names = {"service": "ari-mediastream", "floor": "bare forwarder (floor)"}
    # Series keyed by (label, target): one label plots as before, several are told apart.
    data = {}
    for label, path in zip(labels, paths):
        for target, rows in load(path).items():
            shown = names.get(target, target)
            data[shown if len(paths) == 1 else f"{label}: {shown}"] = rows

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for series_name, rows in data.items():
        xs, ys = series(rows, "cpu_pct_per_stream")
        ax.plot(xs, ys, marker="o", label=series_name)
    mark_lossy(ax, data, ["cpu_pct_per_stream"])
    ax.axhline(0.07, color="grey", linestyle="--", label="target 0.07 %")
    ax.set_xlabel("two-way streams (N)")
    ax.set_ylabel("relay CPU per stream, % of one core")
    ax.set_title(f"CPU per stream vs N ({name}; SIMULATED Asterisk, 2 cores)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{base}-cpu.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for series_name, rows in data.items():
        xs, ys = series(rows, "a2c_p99_ms")
        ax.plot(xs, ys, marker="o", label=f"{series_name}: Asterisk→client p99")
        xs, ys = series(rows, "c2a_late_p99_ms")
        ax.plot(xs, ys, marker="s", linestyle=":",
                label=f"{series_name}: client→Asterisk lateness p99")
    mark_lossy(ax, data, ["a2c_p99_ms", "c2a_late_p99_ms"])
    ax.axhline(2, color="grey", linestyle="--", label="target A→C p99 2 ms")
    ax.axhline(1, color="grey", linestyle="-.", label="target lateness p99 1 ms")
    ax.set_yscale("log")
    ax.set_xlabel("two-way streams (N)")
    ax.set_ylabel("ms (log)")
    ax.set_title(f"Latency p99 vs N ({name}; SIMULATED Asterisk, 2 cores)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{base}-latency.png", dpi=110)
    print(f"{base}-cpu.png {base}-latency.png")


if __name__ == "__main__":
    main()
