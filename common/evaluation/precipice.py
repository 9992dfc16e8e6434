"""How stable are rankings of agents from few runs? The "Statistical Precipice" check on real run directories.

    python -m common.evaluation.precipice RUNS... --out results/rliable/precipice.json [--runs-per-task 3]

Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice", NeurIPS) argue that with 3-10 runs
per task, point estimates of mean and median normalised scores are unreliable, and recommend the IQM with
stratified-bootstrap CIs. This measures it on our own runs: agents are (paper, tag) labels, tasks are
(env, dataset) pairs, scores are final scores normalised by each task's bounds. For every stratified
bootstrap replicate (runs resampled with replacement within each agent and task, as `common.evaluation.stats`
does), each metric ranks the agents; a replicate "flips" a metric when its ranking differs from the ranking
on all runs. Also recorded: each metric's 95% CI width per agent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import ConfigError, RlreproError
from common.evaluation.references import Bounds
from common.evaluation.runs import Run, load_runs
from common.evaluation.stats import METRICS, bootstrap_intervals, stratified_indices

RANKED = ("mean", "median", "iqm")


def label(run: Run) -> str:
    return run.paper + (f"[{run.tag}]" if run.tag else "")


def task(run: Run) -> str:
    cfg = yaml.safe_load((run.path / "config.yaml").read_text()) or {}
    ds = cfg.get("dataset")
    return run.env + (f"/{ds}" if isinstance(ds, str) else "")


def _bounds(run: Run) -> Bounds:
    assert run.bounds is not None  # score_cube keeps only runs with bounds
    return run.bounds


def score_cube(runs: Sequence[Run], runs_per_task: int) -> tuple[list[str], list[str], np.ndarray]:
    """(agents, tasks, scores (agents, runs, tasks)): normalised final scores, the first runs by seed."""
    cells: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if r.complete and r.bounds is not None:
            cells[(label(r), task(r))].append(r)
    agents = sorted({a for a, _ in cells})
    tasks = sorted({t for _, t in cells})
    missing = [f"{a} on {t}" for a in agents for t in tasks if len(cells[(a, t)]) < runs_per_task]
    if not agents or len(agents) < 2 or len(tasks) < 2 or missing:
        raise ConfigError(
            "need >= 2 agents on the same >= 2 tasks with "
            f"{runs_per_task} finished, normalisable runs each; short: {', '.join(missing) or 'agents/tasks'}"
        )
    cube = np.empty((len(agents), runs_per_task, len(tasks)))
    for i, a in enumerate(agents):
        for j, t in enumerate(tasks):
            chosen = sorted(cells[(a, t)], key=lambda r: (r.seed, str(r.path)))[:runs_per_task]
            cube[i, :, j] = [100 * float(_bounds(r).normalize(float(r.final or 0.0))) for r in chosen]
    return agents, tasks, cube


def rankings(values: np.ndarray) -> np.ndarray:
    """Rank order (best first) of agents along the last axis."""
    return np.argsort(-values, axis=-1, kind="stable")


def analyse(cube: np.ndarray, reps: int, seed: int) -> dict[str, Any]:
    """Per metric: the full-sample ranking, the flip indicator of every replicate, CI widths per agent."""
    agents, runs, tasks = cube.shape
    rng = np.random.default_rng(seed)
    # Each agent is resampled independently within each task (agents never share a draw).
    idx = np.stack([stratified_indices(rng, runs, tasks, reps) for _ in range(agents)], axis=1)
    resampled = np.take_along_axis(cube[None], idx, axis=2)  # (reps, agents, runs, tasks)
    out: dict[str, Any] = {}
    for name in RANKED:
        metric = METRICS[name]
        point = metric(cube)  # (agents,)
        reps_values = metric(resampled)  # (reps, agents)
        flips = np.any(rankings(reps_values) != rankings(point)[None], axis=1)
        widths = []
        for a in range(agents):
            iv = bootstrap_intervals(cube[a], (name,), reps=reps, seed=seed)[name]
            widths.append(float(iv.upper - iv.lower))
        out[name] = {
            "point": point.tolist(),
            "ranking": rankings(point).tolist(),
            "flips": flips.astype(int).tolist(),
            "flip_rate": float(flips.mean()),
            "ci_width": widths,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluation.precipice", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="run directories or folders that contain them")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--runs-per-task", type=int, default=3, help="runs per agent and task (3)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replicates (2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.runs_per_task < 2 or args.reps < 1:
            raise ConfigError("--runs-per-task must be >= 2 and --reps >= 1")
        agents, tasks, cube = score_cube(load_runs(args.runs), args.runs_per_task)
        data = {
            "agents": agents,
            "tasks": tasks,
            "runs_per_task": args.runs_per_task,
            "reps": args.reps,
            "seed": args.seed,
            "scores": cube.tolist(),
            "metrics": analyse(cube, args.reps, args.seed),
        }
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    rates = ", ".join(f"{m} {data['metrics'][m]['flip_rate']:.3f}" for m in RANKED)
    print(
        f"{args.out}: {len(agents)} agents x {len(tasks)} tasks x {args.runs_per_task} runs; "
        f"flip rates {rates}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
