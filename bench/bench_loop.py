"""Run-loop overhead: agent steps/s of the shared loops with an agent that does nothing.

Run from the repository root:

    python bench/bench_loop.py                                  # this tree: one JSON object
    python bench/bench_loop.py --compare /tmp/rlrepro-before    # alternate this tree with another checkout

Each loop runs through its public entry point with a null agent (zero actions, constant metrics, no
networks), so what is timed is the loop itself and what it drives every step: env steps (Gymnasium
Pendulum-v1, 200-step episodes), replay adds and batch samples, the sampler, metric averaging, the progress
bar, the stop check, and one evaluation episode at the start and at the end.

- `online`: `common.loop.train_online` (`paper=sac`), replay of capacity `--frames`, batch 256, one update
  per step from step 0, no checkpoint but the last one (without the replay);
- `stream`: `common.loop.train_stream` (`paper=stream_ac`), one `learn` per step;
- `offline`: `common.offline.loop.run_learner` (`paper=td3bc`), uniform batches of 256 from a random
  dataset of 100k rows, a train row every 1000 steps.

Each loop reports agent steps per wall second and per CPU second of the process; `--profile` reports its
Python function calls per step instead (cProfile: deterministic, where times on a shared host swing by
±20 %). `--compare DIR` profiles each tree once, then times it `--rounds` times, alternating which tree goes
first, with `DIR` or this repository first on PYTHONPATH (the `common` package is taken from there); it
reports each figure's median per tree and the median of the per-round ratios (this tree / DIR).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


class NullAgent:
    """Satisfies `Agent`, `StreamAgent` and `OfflineAgent` at no cost."""

    def __init__(self, cfg: Any, spec: Any, device: torch.device, precision: str) -> None:
        self.action = np.zeros(spec.action_shape, np.float32)

    def prepare(self, data: Any) -> None:
        pass

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        return self.action

    def update(self, batch: Any, step: int) -> dict[str, float]:
        return {"loss": 0.0}

    def learn(self, *transition: Any) -> dict[str, float]:
        return {"loss": 0.0}

    def end_episode(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _config(paper: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    from common.registry import CONF_DIR, trust_package

    common = [
        f"paper={paper}",
        "env=pendulum",
        "device=cpu",
        "logger.progress=false",
        "logger.wandb.enabled=false",
    ]
    agent = f"paper.entry={__name__}.NullAgent"  # `__main__.NullAgent`: import_entry finds it in this script
    trust_package(__name__.split(".")[0])  # entry points resolve in papers/common only, unless trusted
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*common, agent, *overrides])


def _context(run_dir: Path) -> Any:
    from common.runtime import RunContext, StopFlag

    info = {"wandb_id": "bench", "config_hash": "bench"}
    return RunContext(run_dir=run_dir, device=torch.device("cpu"), resuming=False, stop=StopFlag(), info=info)


def _random_dataset(n: int, obs_dim: int, action_dim: int) -> Any:
    from common.offline.data import OfflineData

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    starts = np.arange(0, n, 1000, dtype=np.int64)
    truncations = np.zeros(n, bool)
    truncations[np.append(starts[1:], n) - 1] = True
    return OfflineData(
        observations=obs[:-1],
        actions=rng.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs[1:],
        terminations=np.zeros(n, bool),
        truncations=truncations,
        episode_starts=starts,
        metadata={"ref_min_score": -1200.0, "ref_max_score": -150.0},
    )


def _online(frames: int, stream: bool) -> Callable[[Path], Any]:
    from common.loop import train_online, train_stream

    paper = "stream_ac" if stream else "sac"
    budget = [f"paper.train.num_frames={frames}", f"paper.train.eval_every_frames={frames}"]
    replay = [
        "paper.train.seed_frames=0",
        f"paper.buffer.capacity={frames}",
        f"checkpoint.every_frames={10 * frames}",
        "checkpoint.replay=false",
    ]
    cfg = _config(paper, [*budget, "paper.train.eval_episodes=1", *([] if stream else replay)])
    run = train_stream if stream else train_online
    return lambda tmp: run(cfg, _context(tmp))


def _offline(steps: int) -> Callable[[Path], Any]:
    from common.loop import build_env
    from common.offline.loop import run_learner

    overrides = [f"paper.train.num_steps={steps}", f"paper.train.eval_every_steps={steps}"]
    cfg = _config("td3bc", ["dataset=medium", "paper.train.eval_episodes=1", *overrides])
    env = build_env(cfg, cfg.seed)  # left open: the worker process ends after the measurement
    data = _random_dataset(100_000, env.spec.obs_shape[0], env.spec.action_shape[0])
    return lambda tmp: run_learner(cfg, _context(tmp), env, data)


def measure(frames: int, steps: int, profile: bool) -> dict[str, Any]:
    """Each loop's steps per wall and per CPU second; with `profile`, its Python calls per step instead
    (counted by cProfile: deterministic, unlike times on a shared host)."""
    import common

    torch.set_num_threads(1)
    out: dict[str, Any] = {"common": str(Path(common.__file__).parent)}
    for name, n, run in (
        ("online", frames, _online(frames, stream=False)),
        ("stream", frames, _online(frames, stream=True)),
        ("offline", steps, _offline(steps)),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            if profile:
                profiler = cProfile.Profile()
                profiler.runcall(run, Path(tmp))
                out[f"{name}_calls_per_step"] = round(pstats.Stats(profiler).total_calls / n, 2)
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            run(Path(tmp))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[f"{name}_steps_per_s"], out[f"{name}_steps_per_cpu_s"] = round(n / wall, 1), round(n / cpu, 1)
    return out


def _worker(tree: Path, frames: int, steps: int, profile: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(HERE), "--frames", str(frames), "--steps", str(steps)]
    out = subprocess.run(
        [*args, *(["--profile"] if profile else [])], cwd=tree, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench worker in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(other: Path, rounds: int, frames: int, steps: int) -> dict[str, Any]:
    from common.runtime import cpu_name, cpu_pressure

    trees = {"this": ROOT, "other": other.resolve()}
    calls = {name: _worker(tree, frames, steps, profile=True) for name, tree in trees.items()}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    pressure = [cpu_pressure()]
    for r in range(rounds):
        for name in list(trees)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(_worker(trees[name], frames, steps, profile=False))
        pressure.append(cpu_pressure())
    table: dict[str, Any] = {}
    for loop in ("online", "stream", "offline"):
        key = f"{loop}_calls_per_step"
        table[key] = {"this": calls["this"][key], "other": calls["other"][key]}
        for clock in ("s", "cpu_s"):
            key = f"{loop}_steps_per_{clock}"
            this, that = ([run[key] for run in runs[n]] for n in ("this", "other"))
            table[key] = {
                "this": statistics.median(this),
                "other": statistics.median(that),
                # each round's two runs are adjacent in time: their ratio cancels slow drifts of the load
                "paired_ratio_median": round(
                    statistics.median(a / b for a, b in zip(this, that, strict=True)), 3
                ),
            }
    return {
        "benchmark": "loop_overhead",
        "cpu": cpu_name(),
        "cpu_pressure": pressure,
        "rounds": rounds,
        "frames": frames,
        "steps": steps,
        "trees": {n: str(p) for n, p in trees.items()},
        "median": table,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="env frames of the online and stream runs")
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps of the offline run")
    parser.add_argument("--compare", type=Path, default=None, help="another checkout to time against")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per tree with --compare")
    parser.add_argument("--profile", action="store_true", help="count Python calls per step, not time")
    args = parser.parse_args()
    if args.compare is None:
        print(json.dumps(measure(args.frames, args.steps, args.profile)))
    else:
        print(json.dumps(compare(args.compare, args.rounds, args.frames, args.steps)))


if __name__ == "__main__":
    main()
