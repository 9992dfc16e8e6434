"""The paper's experiment as one run: five datasets, their TQ/SACo, then every learner on every dataset.

`paper.loop: papers.dataset_perspective.loop.run`. Phase 1 (generate.py) makes or reuses this seed's datasets.
Phase 2 trains each chosen learner (`paper.learner`: all, or one name) on each dataset as
kschweig/OfflineRL @478661f source/train_offline.py does: `num_steps` updates on minibatches of 128 drawn
uniformly without replacement (`ReplayBuffer.sample`, numpy Generator seeded with the run's seed), 10 greedy
evaluation episodes every `eval_every_steps` updates (not at step 0). Each pair has its own directory
`learners/<learner>/<dataset>/` (train.jsonl, eval.jsonl, result.json, learner.pt); a resumed run skips the
finished pairs and restarts an interrupted one from scratch. results.json holds TQ, SACo and each learner's
normalised return per dataset, figure.png the returns against TQ and SACo.

Normalised return (create_plots.py "performance"): (max over evaluations of the mean return - random
dataset's mean return) / (online run's best evaluation return - random dataset's mean return).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from common.errors import ConfigError, DatasetError
from common.logger import Averager, MetricsFile
from common.offline.data import OfflineData
from common.registry import loop
from common.runtime import RunContext, write_json
from papers.dataset_perspective import generate, metrics
from papers.dataset_perspective.learners import LEARNERS, check_learner, make_learner
from papers.dataset_perspective.learners.base import DiscreteBatch
from papers.dataset_perspective.learners.mce import returns_to_go

DISCRETE_SUITES = ("gym_discrete", "minatar", "minigrid")


def chosen_learners(cfg: DictConfig) -> list[str]:
    if cfg.paper.learner == "all":
        return [check_learner(x) for x in cfg.paper.learners]
    return [check_learner(cfg.paper.learner)]


def validate(cfg: DictConfig) -> None:
    """Impossible settings fail before the run directory is written (one line each)."""
    p, t = cfg.paper, cfg.paper.train
    chosen_learners(cfg)
    for kind in p.dataset_types:
        if kind not in generate.TYPES:
            raise ConfigError(
                f"paper.dataset_types has {kind!r}, not a dataset type; choose from "
                f"{', '.join(generate.TYPES)}"
            )
    if cfg.env.get("suite") not in DISCRETE_SUITES:
        raise ConfigError(
            f"paper=dataset_perspective needs a discrete-action env ({', '.join(DISCRETE_SUITES)} suites, "
            f"e.g. env=cartpole), got env={cfg.env.name} (suite {cfg.env.get('suite')})"
        )
    metrics.check_deterministic(cfg.env)
    checks = [
        (p.scale in p.sizes, f"paper.scale={p.scale} must be one of {', '.join(p.sizes)}"),
        (t.num_frames >= 2, f"paper.train.num_frames={t.num_frames} must be at least 2 (dataset size)"),
        (
            0 < t.eval_every_frames <= t.num_frames,
            f"paper.train.eval_every_frames={t.eval_every_frames} must be in [1, num_frames] "
            f"(TQ needs an evaluation)",
        ),
        (t.num_steps > 0, f"paper.train.num_steps={t.num_steps} must be positive"),
        (
            0 < t.eval_every_steps <= t.num_steps,
            f"paper.train.eval_every_steps={t.eval_every_steps} must be in [1, num_steps]",
        ),
        (t.eval_episodes >= 1, f"paper.train.eval_episodes={t.eval_episodes} must be at least 1"),
        (
            p.buffer.batch_size <= t.num_frames,
            f"paper.buffer.batch_size={p.buffer.batch_size} exceeds the dataset size "
            f"{t.num_frames} (sampled without replacement)",
        ),
        (
            p.online.batch_size <= p.online.train_start + 1,
            f"paper.online.batch_size={p.online.batch_size} must be <= train_start + 1 "
            f"(sampled without replacement)",
        ),
        (
            0.0 < p.online.mixed_random_fraction < 1.0,
            f"paper.online.mixed_random_fraction={p.online.mixed_random_fraction} must be in (0, 1)",
        ),
        (
            p.metrics.saco_limits in ("replay", "own"),
            f"paper.metrics.saco_limits={p.metrics.saco_limits} must be replay or own",
        ),
        (
            p.agent.crr_weighting in ("binary", "exp"),
            f"paper.agent.crr_weighting={p.agent.crr_weighting} must be binary or exp",
        ),
        (not p.pixels, "paper=dataset_perspective learns from states: set paper.pixels=false"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if not p.datasets_overwrite:
        key = generate.generation_key(cfg)
        for kind, info in generate.stored(cfg).items():
            if info is not None and info.get("generation") != key:
                raise DatasetError(
                    f"dataset {generate.dataset_ids(cfg)[kind]} exists with other generation settings "
                    f"(made by {info.get('run_dir')}); pass paper.datasets_overwrite=true or another seed"
                )


class DatasetSampler:
    """train_offline.py's buffer: uniform minibatches without replacement; `done` = terminated or truncated
    (upstream's gym `done`), BVE's next action = the next row's action, MCE's discounted return-to-go."""

    def __init__(self, data: OfflineData, mce_discount: float, seed: int, device: torch.device) -> None:
        n = len(data)
        dones = data.terminations | data.truncations
        self.obs = data.observations.reshape(n, -1).astype(np.float32)
        self.next_obs = data.next_observations.reshape(n, -1).astype(np.float32)
        self.action = np.asarray(data.actions, np.int64).reshape(n)
        self.next_action = np.append(self.action[1:], 0)  # upstream: action[ind + 1] (0 after the last row)
        self.reward = data.rewards.astype(np.float32)
        self.not_done = (~dones).astype(np.float32)
        self.mc_return = returns_to_go(self.reward, dones, mce_discount)
        self.rng = np.random.default_rng(seed)  # buffer.set_seed(seed)
        self.device = device

    def sample(self, batch_size: int) -> DiscreteBatch:
        ind = self.rng.choice(len(self.reward), size=batch_size, replace=False)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x[ind], device=self.device)

        return DiscreteBatch(
            t(self.obs),
            t(self.action),
            t(self.reward),
            t(self.next_obs),
            t(self.not_done),
            t(self.next_action),
            t(self.mc_return),
        )


def normalised(value: float, random_return: float, online_best: float) -> float:
    return metrics.scaled(value, random_return, online_best)


def train_pair(
    cfg: DictConfig, ctx: RunContext, name: str, kind: str, data: OfflineData, measures: dict[str, Any]
) -> dict[str, Any] | None:
    """One learner on one dataset (train_offline.py); None when a stop signal cut it."""
    p, t = cfg.paper, cfg.paper.train
    out = ctx.run_dir / "learners" / name / kind
    if (out / "result.json").exists():
        import json

        return json.loads((out / "result.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for f in ("train.jsonl", "eval.jsonl"):
        (out / f).unlink(missing_ok=True)  # an interrupted pair starts again
    torch.manual_seed(cfg.seed)
    sampler = DatasetSampler(data, float(p.agent.mce_discount), cfg.seed, ctx.device)
    learner = make_learner(
        p.agent, name, sampler.obs.shape[1], _num_actions(data), p.discount, cfg.seed, ctx.device
    )
    train_log, eval_log, avg = MetricsFile(out / "train.jsonl"), MetricsFile(out / "eval.jsonl"), Averager()
    rand, best = measures["random_return"], measures["online_best_return"]
    returns: list[float] = []
    start = time.perf_counter()
    bar = tqdm(
        range(int(t.num_steps)), desc=f"{name} on {kind}", unit="step", dynamic_ncols=True, mininterval=1.0
    )
    for it in bar:
        avg.add(learner.update(sampler.sample(int(p.buffer.batch_size))))
        step = it + 1
        if step % int(t.log_every_steps) == 0:
            row = avg.pop()
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"{name} on {kind}: non-finite loss at step {step} ({row})")
            train_log.write({"step": step, **row, "time": time.perf_counter() - start})
        if step % int(t.eval_every_steps) == 0:
            ret = generate.evaluate(cfg, generate.greedy(learner), int(t.eval_episodes))
            returns.append(ret)
            eval_log.write(
                {"step": step, "episode_return": ret, "normalized_return": normalised(ret, rand, best)}
            )
            bar.set_postfix(eval_return=f"{ret:.1f}")
        if ctx.stop:
            return None
    torch.save(learner.state_dict(), out / "learner.pt")
    result = {
        "learner": name,
        "dataset": kind,
        "eval_returns": returns,
        "final_return": returns[-1],
        "best_return": max(returns),
        "normalized_return": normalised(max(returns), rand, best),  # create_plots.py: max over evaluations
        "normalized_final_return": normalised(returns[-1], rand, best),
        "tq": measures["tq"],
        "saco": measures["saco"],
    }
    write_json(out / "result.json", result)
    return result


def _num_actions(data: OfflineData) -> int:
    n = data.metadata.get("num_actions")
    return int(n) if n is not None else int(np.max(data.actions)) + 1


def figure(results: dict[str, Any], path: Path) -> None:
    """Per learner: normalised return against TQ and against SACo (one marker per dataset), as the paper's
    scatter plots (create_plots.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learners = list(results["learners"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, measure in zip(axes, ("tq", "saco"), strict=True):
        for name in learners:
            rows = results["learners"][name]
            kinds = list(rows)
            x = [results["datasets"][k][measure] for k in kinds]
            y = [rows[k]["normalized_return"] for k in kinds]
            order = np.argsort(x)
            ax.plot(np.asarray(x)[order], np.asarray(y)[order], marker="o", label=name.upper())
        ax.set_xlabel(measure.upper())
        ax.axhline(1.0, color="silver", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("normalised return (best evaluation)")
    axes[1].legend(fontsize="small", ncol=2)
    fig.suptitle(f"{results['env']}: offline learners vs dataset TQ and SACo (seed {results['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@loop(validate=validate)
def run(cfg: DictConfig, ctx: RunContext) -> float:
    """Phase 1 (datasets, TQ, SACo), phase 2 (learners); returns the mean normalised return over pairs."""
    data, measures = generate.generate_or_load(cfg, ctx.run_dir.resolve(), ctx.device)
    ids = generate.dataset_ids(cfg)
    kinds = [k for k in generate.TYPES if k in cfg.paper.dataset_types]
    for kind in generate.TYPES:
        m = measures[kind]
        print(
            f"  {kind:<7} TQ {m['tq']:6.3f}  SACo {m['saco']:6.3f}  ({m['transitions']} transitions, "
            f"{m['episodes']} episodes, mean return {m['mean_return']:.1f})  {ids[kind]}"
        )
    results: dict[str, Any] = {
        "env": cfg.env.name,
        "seed": int(cfg.seed),
        "datasets": {k: {**measures[k], "id": ids[k]} for k in generate.TYPES},
        "learners": {},
    }
    ctx.info["datasets"] = ids
    write_json(ctx.run_dir / "results.json", results)
    scores = []
    for name in chosen_learners(cfg):
        for kind in kinds:
            r = train_pair(cfg, ctx, name, kind, data[kind], measures[kind])
            if r is None:
                return math.nan
            results["learners"].setdefault(name, {})[kind] = {
                k: r[k]
                for k in ("normalized_return", "normalized_final_return", "best_return", "final_return")
            }
            scores.append(r["normalized_return"])
            write_json(ctx.run_dir / "results.json", results)
    figure(results, ctx.run_dir / "figure.png")
    return float(np.mean(scores))


__all__ = ["LEARNERS", "run", "validate"]
