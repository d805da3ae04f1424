"""Run `streamlearn bench` for every learner on rotated-mnist-10k, one after another, and print a table.

Usage: python benchmarks/run_all.py [--tasks N] [--seed S] [--learners mer,lamaml,...] [--report DIR]

With --report DIR it also writes DIR/index.html comparing every learner side by side (accuracy
heatmaps, per-task curves, RA/LA/BTI and examples/s; the PNGs are embedded and also written beside it).

Learners run sequentially on purpose: two at once on a 2-core machine would halve each one's speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

LEARNERS = ["sgd", "er", "mer", "lamaml", "cmaml"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default="rotated-mnist-10k")
    ap.add_argument("--tasks", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learners", default=",".join(LEARNERS))
    ap.add_argument("--report", metavar="DIR", default=None, help="write an HTML report of all learners")
    args = ap.parse_args()
    rows = []
    for name in args.learners.split(","):
        cmd = [
            sys.executable,
            "-m",
            "streamlearn.cli",
            "bench",
            "--stream",
            args.stream,
            "--learner",
            name,
            "--seed",
            str(args.seed),
            "--json",
        ]
        if args.tasks:
            cmd += ["--tasks", str(args.tasks)]
        print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{'learner':8} {'RA':>7} {'LA':>7} {'BTI':>7} {'preq':>7} {'ex/s':>8} {'wall s':>7}")
    for r in rows:
        print(
            f"{r['learner']:8} {r['ra']:7.4f} {r['la']:7.4f} {r['bti']:+7.4f} "
            f"{r['prequential_accuracy']:7.4f} {r['examples_per_s']:8.1f} {r['wall_s']:7.1f}"
        )
    if args.report:
        from streamlearn.bench_report import write_report

        print(f"\nreport: {write_report(rows, args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
