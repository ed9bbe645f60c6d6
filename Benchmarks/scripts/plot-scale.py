#!/usr/bin/env python3
"""Plots the scale benchmark's CSV: a set change's CPU time and latency against the set's size.

    swift run -c release scale --csv scale.csv
    python3 scripts/plot-scale.py scale.csv ../docs/images/scale-change-cost.png [--before before.csv]

Needs matplotlib (pip install matplotlib). One line per balancer; log-log axes; with --before, the
same balancers before the change as dashed lines.
"""
import argparse
import csv
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = [
    "n", "balancer", "first_wall_ms", "first_cpu_ms", "bytes_per_instance",
    "change_wall_p50_ms", "change_wall_p99_ms", "change_cpu_p50_ms", "change_cpu_p99_ms",
    "mallocs_per_change", "idle_pick_p50_us", "idle_pick_p99_us", "idle_pick_p999_us",
    "flood_changes_per_s", "flood_pick_p50_us", "flood_pick_p99_us", "flood_pick_p999_us",
    "paced_changes_per_s", "paced_pick_p99_us", "paced_pick_p999_us",
    "control_changes_per_s", "control_pick_p99_us", "control_pick_p999_us",
]


def load(path):
    series = defaultdict(list)
    with open(path) as handle:
        for row in csv.reader(handle):
            if not row or row[0] == "n":
                continue
            # Files written before the control columns have three fields fewer.
            if len(row) not in (len(COLUMNS), len(COLUMNS) - 3):
                raise SystemExit(f"{path}: a row has {len(row)} fields, expected {len(COLUMNS)}: {row}")
            record = dict(zip(COLUMNS, row))
            series[record["balancer"]].append(record)
    for rows in series.values():
        rows.sort(key=lambda r: int(r["n"]))
    return series


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("output")
    parser.add_argument("--before")
    parser.add_argument("--title", default="One instance added or removed: cost against the set's size")
    args = parser.parse_args()
    after = load(args.csv)
    before = load(args.before) if args.before else {}

    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    panels = [("change_cpu_p50_ms", "CPU per change, p50 (ms)"), ("change_wall_p99_ms", "write to picks, p99 (ms)")]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (column, label) in zip(axes, panels):
        for index, (name, rows) in enumerate(sorted(after.items())):
            colour = colours[index % len(colours)]
            axis.plot([int(r["n"]) for r in rows], [float(r[column]) for r in rows], marker="o", color=colour, label=name)
            if name in before:
                old = before[name]
                axis.plot([int(r["n"]) for r in old], [float(r[column]) for r in old], linestyle="--", marker="x", color=colour,
                          alpha=0.6, label=f"{name} (before)")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("instances in the set")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        if column == "change_cpu_p50_ms":
            axis.axhline(2, color="black", linewidth=0.8, linestyle=":")
            axis.text(110, 2.2, "target at 10,000: 2 ms", fontsize=8)
        else:
            axis.axhline(5, color="black", linewidth=0.8, linestyle=":")
            axis.text(110, 5.5, "target at 10,000: 5 ms", fontsize=8)
    axes[1].legend(fontsize=7, loc="upper left", ncol=2)
    figure.suptitle(args.title)
    figure.tight_layout()
    figure.savefig(args.output, dpi=110)


if __name__ == "__main__":
    main()
