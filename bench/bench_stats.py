"""Stratified bootstrap speed: IQM + 50,000 replicates on a 10-run x 5-task matrix; prints one JSON object.

    python bench/bench_stats.py [--reps 50000] [--runs 10] [--tasks 5] [--repeats 5]

Ours is `common.evaluation.bootstrap_ci` (best of `--repeats`). If rliable is importable, the same interval
with `rliable.library.get_interval_estimates` (one timing: it loops over replicates in Python), seeded through
`np.random.seed` because rliable draws from the global NumPy state.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common.evaluation import bootstrap_ci  # noqa: E402
from common.runtime import cpu_pressure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 0.5, size=(args.runs, args.tasks))
    out: dict[str, object] = {
        "shape": [args.runs, args.tasks],
        "reps": args.reps,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_pressure_before": cpu_pressure(),
    }
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        iv = bootstrap_ci(scores, "iqm", reps=args.reps, seed=0)
        times.append(time.perf_counter() - start)
    out["ours_s"] = round(min(times), 4)
    out["ours_median_s"] = round(float(np.median(times)), 4)
    out["ours_ci"] = [round(float(iv.lower), 4), round(float(iv.upper), 4)]
    out["iqm"] = round(float(iv.point), 6)
    try:
        from rliable import library as rly
        from rliable import metrics as rm
    except ImportError:
        out["rliable_s"] = None
    else:
        np.random.seed(0)
        start = time.perf_counter()
        _, cis = rly.get_interval_estimates(
            {"a": scores}, lambda s: np.array([rm.aggregate_iqm(s)]), reps=args.reps
        )
        out["rliable_s"] = round(time.perf_counter() - start, 4)
        out["rliable_ci"] = [round(float(cis["a"][0, 0]), 4), round(float(cis["a"][1, 0]), 4)]
        out["speedup"] = round(out["rliable_s"] / out["ours_s"], 1)
    out["cpu_pressure_after"] = cpu_pressure()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
