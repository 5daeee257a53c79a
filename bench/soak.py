#!/usr/bin/env python3
"""Samples a running service during a soak, and plots and sums up the samples (scripts/soak).

    soak.py sample --pid PID --metrics URL --out soak.csv [--interval 10] [--while-pid PID]
                   [--asterisk-pid PID]
    soak.py plot soak.csv [--streams N]     # writes soak.png next to it, prints the summary

`sample` appends one row every --interval seconds (on absolute deadlines) until --while-pid
exits: the service's VmRSS (/proc/PID/status), open file descriptors (/proc/PID/fd), CPU
(utime+stime deltas of /proc/PID/stat, % of one core) and Asterisk's, and from the service's
/metrics the streams open (mediastream_streams_active), the frames relayed each way
(mediastream_stream_frames_total) and the frames dropped (mediastream_stream_drops_total, every
reason). Per interval it derives frames per second per stream each way and the frames missing
towards the clients (streams x 50/s x interval minus what was relayed; streams add to the
counters once a second, so one interval may read a few frames over or under).

`sample` needs only the standard library; `plot` needs matplotlib (scripts/plot-venv).
"""

import argparse
import csv
import json
import os
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
FIELDS = [
    "t_s", "streams", "rss_kib", "fds", "cpu_pct", "asterisk_cpu_pct",
    "to_client_frames", "to_asterisk_frames", "drops_total",
    "to_client_fps", "to_asterisk_fps", "missing_to_client", "drops",
]


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[11]) + int(rest[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def metrics(url):
    """(streams open, frames to client, frames to Asterisk, drops) from Prometheus text."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    streams = to_client = to_asterisk = drops = 0.0
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        value = float(value)
        if name.startswith("mediastream_streams_active"):
            streams += value
        elif name == 'mediastream_stream_frames_total{direction="to_client"}':
            to_client = value
        elif name == 'mediastream_stream_frames_total{direction="to_asterisk"}':
            to_asterisk = value
        elif name.startswith("mediastream_stream_drops_total"):
            drops += value
    return streams, to_client, to_asterisk, drops


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def sample(args):
    start = time.monotonic()
    prev = None
    with open(args.out, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(FIELDS)
        f.flush()
        tick = 0
        while args.while_pid is None or alive(args.while_pid):
            now = time.monotonic()
            ticks = cpu_ticks(args.pid)
            if ticks is None:
                break
            ast = cpu_ticks(args.asterisk_pid) if args.asterisk_pid else None
            try:
                streams, to_client, to_asterisk, drops = metrics(args.metrics)
            except OSError as e:
                print(f"soak.py: {args.metrics}: {e}", file=sys.stderr)
                streams = to_client = to_asterisk = drops = float("nan")
            row = {
                "t_s": round(now - start, 1), "streams": int(streams) if streams == streams else "",
                "rss_kib": rss_kib(args.pid), "fds": fds(args.pid),
                "cpu_pct": "", "asterisk_cpu_pct": "",
                "to_client_frames": int(to_client) if to_client == to_client else "",
                "to_asterisk_frames": int(to_asterisk) if to_asterisk == to_asterisk else "",
                "drops_total": int(drops) if drops == drops else "",
                "to_client_fps": "", "to_asterisk_fps": "", "missing_to_client": "", "drops": "",
            }
            if prev is not None:
                dt = now - prev["now"]
                row["cpu_pct"] = round(100.0 * (ticks - prev["ticks"]) / CLK_TCK / dt, 2)
                if ast is not None and prev["ast"] is not None:
                    row["asterisk_cpu_pct"] = round(100.0 * (ast - prev["ast"]) / CLK_TCK / dt, 2)
                # Streams open over the interval: the mean of its two ends (none while the
                # streams open or close: a rate per stream means nothing there).
                n = (streams + prev["streams"]) / 2
                if min(streams, prev["streams"]) >= 1:
                    row["to_client_fps"] = round((to_client - prev["to_client"]) / dt / n, 2)
                    row["to_asterisk_fps"] = round((to_asterisk - prev["to_asterisk"]) / dt / n, 2)
                    row["missing_to_client"] = int(round(n * 50 * dt - (to_client - prev["to_client"])))
                if drops == drops and prev["drops"] == prev["drops"]:
                    row["drops"] = int(drops - prev["drops"])
            out.writerow([row[k] for k in FIELDS])
            f.flush()
            prev = {"now": now, "ticks": ticks, "ast": ast, "streams": streams, "to_client": to_client,
                    "to_asterisk": to_asterisk, "drops": drops}
            tick += 1
            time.sleep(max(0.0, start + tick * args.interval - time.monotonic()))


def slope_per_hour(xs, ys):
    """Least-squares slope of ys over xs (seconds), per hour."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return 3600.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(row, key):
    v = row.get(key, "")
    return float(v) if v not in ("", None) else None


def summary(rows, streams):
    """Figures over the steady part: every sample with all the streams open."""
    want = streams or max(int(num(r, "streams") or 0) for r in rows)
    steady = [r for r in rows if (num(r, "streams") or 0) >= want]
    if len(steady) < 2:
        steady = rows
    t = [num(r, "t_s") for r in steady]
    rss = [num(r, "rss_kib") for r in steady]
    fd = [num(r, "fds") for r in steady]
    cpu = [num(r, "cpu_pct") for r in steady[1:] if num(r, "cpu_pct") is not None]
    ast = [num(r, "asterisk_cpu_pct") for r in steady[1:] if num(r, "asterisk_cpu_pct") is not None]
    first, last = steady[0], steady[-1]
    relayed = num(last, "to_client_frames") - num(first, "to_client_frames")
    span = t[-1] - t[0]
    expected = want * 50 * span
    out = {
        "streams": want,
        "steady_s": round(span, 1),
        "samples": len(steady),
        "rss_kib": [int(rss[0]), int(rss[-1])],
        "rss_kib_per_hour": round(slope_per_hour(t, rss), 1),
        "rss_kib_min_max": [int(min(rss)), int(max(rss))],
        "fds": [int(fd[0]), int(fd[-1])],
        "fds_min_max": [int(min(fd)), int(max(fd))],
        "fds_per_hour": round(slope_per_hour(t, fd), 2),
        "cpu_pct": [cpu[0] if cpu else None, cpu[-1] if cpu else None],
        "cpu_pct_mean": round(sum(cpu) / len(cpu), 2) if cpu else None,
        "cpu_pct_per_hour": round(slope_per_hour(t[1:], cpu), 2) if len(cpu) == len(t) - 1 else None,
        "asterisk_cpu_pct_mean": round(sum(ast) / len(ast), 1) if ast else None,
        "frames_to_client": int(relayed),
        "frames_to_asterisk": int(num(last, "to_asterisk_frames") - num(first, "to_asterisk_frames")),
        "frames_expected_to_client": int(expected),
        "frames_missing_to_client": int(expected - relayed),
        "frames_dropped": int(num(last, "drops_total") - num(first, "drops_total")),
    }
    return out


def plot(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(args.csv)
    figures = summary(rows, args.streams)
    minutes = [num(r, "t_s") / 60 for r in rows]

    def series(key):
        xs, ys = [], []
        for m, r in zip(minutes, rows):
            v = num(r, key)
            if v is not None:
                xs.append(m)
                ys.append(v)
        return xs, ys

    fig, axes = plt.subplots(4, 1, figsize=(8.5, 10), sharex=True)
    ax = axes[0]
    xs, ys = series("rss_kib")
    ax.plot(xs, [y / 1024 for y in ys], color="tab:blue")
    ax.set_ylabel("RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"Soak: {figures['streams']} two-way streams on SIP calls, real Asterisk 22 (2 shared cores)\n"
        f"RSS {figures['rss_kib'][0] / 1024:.1f} → {figures['rss_kib'][1] / 1024:.1f} MiB "
        f"({figures['rss_kib_per_hour']:+.0f} KiB/h), fds {figures['fds'][0]} → {figures['fds'][1]}, "
        f"{figures['frames_missing_to_client']} frames missing, {figures['frames_dropped']} dropped",
        fontsize=9,
    )
    ax = axes[1]
    xs, ys = series("fds")
    ax.plot(xs, ys, color="tab:green")
    ax.set_ylabel("open fds")
    ax.set_ylim(bottom=0)
    ax = axes[2]
    xs, ys = series("cpu_pct")
    ax.plot(xs, ys, color="tab:red", label="service")
    xs, ys = series("asterisk_cpu_pct")
    if xs:
        ax.plot(xs, ys, color="tab:grey", alpha=0.6, label="Asterisk")
    ax.set_ylabel("CPU, % of one core")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[3]
    xs, ys = series("to_client_fps")
    ax.plot(xs, ys, color="tab:purple", label="to clients")
    xs, ys = series("to_asterisk_fps")
    ax.plot(xs, ys, color="tab:orange", alpha=0.7, label="to Asterisk")
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylabel("frames/s per stream")
    ax.set_ylim(0, 60)
    ax2 = ax.twinx()
    xs, ys = series("drops")
    ax2.bar(xs, ys, width=0.1, color="black", label="dropped (per sample)")
    ax2.set_ylabel("frames dropped")
    ax2.set_ylim(bottom=0, top=max([10] + ys) * 1.2)
    lines = ax.get_legend_handles_labels()
    bars = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + bars[0], lines[1] + bars[1], fontsize=8, loc="lower right")
    axes[-1].set_xlabel("minutes")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    png = os.path.splitext(args.csv)[0] + ".png"
    fig.savefig(png, dpi=100)
    print(json.dumps(figures))
    print(png, file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--asterisk-pid", type=int)
    s.add_argument("--metrics", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--interval", type=float, default=10.0)
    s.add_argument("--while-pid", type=int)
    g = sub.add_parser("plot")
    g.add_argument("csv")
    g.add_argument("--streams", type=int)
    args = p.parse_args()
    sample(args) if args.command == "sample" else plot(args)


if __name__ == "__main__":
    main()
