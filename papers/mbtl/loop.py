"""The run of `paper=mbtl`: measure a transfer matrix over a grid of one context parameter, then run MBTL's
source selection and the baselines on it (papers/mbtl/selection.py), and report each strategy's
generalised performance against the number of trained contexts.

    python run.py paper=mbtl env=cartpole_context                          # train, transfer, select
    python run.py paper=mbtl env=cartpole_context paper.sources=runs/multirun/mbtl_cartpole/<time>
    python run.py paper=mbtl env=cartpole_context paper.transfer_matrix=<results.json or official .csv>

Writes `results.json` (grid, raw and normalised transfer matrix, the multi-task policy's returns, each
strategy's sources and curve), `mbtl.png` (the matrix and the curves), a train.jsonl row per source (its
zero-shot returns) and an eval.jsonl row per selection step. The progress bar counts stages: each source
trained, the multi-task run, each source's transfer row, the selection.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from common.envs import check_env_config
from common.envs.context import GRID_FACTORS, GRID_STEP, check_value, context_family
from common.errors import ConfigError
from common.logger import RunLogger
from common.registry import config_choices, loop
from common.runtime import RunContext, resolve_device, write_json
from papers.mbtl import selection as sel
from papers.mbtl.transfer import (
    SOURCES,
    find_sources,
    finished,
    load_policy,
    train_multitask,
    train_sources,
    value_text,
    zero_shot,
)

RESULTS, FIGURE = "results.json", "mbtl.png"


def grid(cfg: DictConfig) -> tuple[list[float], np.ndarray]:
    """The context values trained and their positions on MBTL's 100-point grid (factor / 0.1 - 1: the
    official code's column index, the unit of the gap slope). debug=smoke keeps the first, middle, last."""
    p = cfg.paper
    if cfg.env.get("context") is None:
        raise ConfigError(
            f"paper=mbtl needs a contextual env (one with env.context), not env={cfg.env.name}; choose "
            f"env=cartpole_context, pendulum_context or hopper_context"
        )
    family = context_family(cfg.env)
    name = str(p.context.name)
    if name not in family.params:
        raise ConfigError(f"paper.context.name={name!r}: {family.env_id} varies {', '.join(family.params)}")
    factors = list(GRID_FACTORS) if p.context.factors == "grid" else [float(f) for f in p.context.factors]
    if len(factors) < 2 or any(not f > 0 for f in factors) or np.any(np.diff(factors) <= 0):
        raise ConfigError(f"paper.context.factors={factors} must be >= 2 increasing positive numbers")
    if p.preset == "smoke":
        factors = [factors[0], factors[len(factors) // 2], factors[-1]]
    default = family.params[name].default
    key = "paper.context.factors gives env.context"
    values = [check_value(family, name, round(default * f, 10), key) for f in factors]
    return values, np.array([f / GRID_STEP - 1.0 for f in factors])


def validate(cfg: DictConfig) -> None:
    p = cfg.paper
    check_env_config(cfg.env, pixels=False, action_repeat=1, image_size=84)  # env.context's ranges
    values, _ = grid(cfg)
    if p.source.paper not in config_choices("paper") or p.source.paper == "mbtl":
        raise ConfigError(f"paper.source.paper={p.source.paper!r}: choose a learner such as ppo or dqn")
    if p.launcher not in config_choices("hydra/launcher"):
        choices = " or ".join(config_choices("hydra/launcher"))
        raise ConfigError(f"paper.launcher={p.launcher!r}: use {choices}")
    s = p.selection
    steps = s.steps if s.steps is not None else len(values)
    checks = [
        (int(p.transfer.episodes) >= 1, f"paper.transfer.episodes={p.transfer.episodes} must be >= 1"),
        (1 <= int(steps) <= len(values), f"paper.selection.steps={s.steps} must be in 1..{len(values)}"),
        (float(s.slope) >= 0, f"paper.selection.slope={s.slope} must be >= 0"),
        (float(s.noise_std) > 0, f"paper.selection.noise_std={s.noise_std} must be > 0"),
        (int(s.n_restarts) >= 0, f"paper.selection.n_restarts={s.n_restarts} must be >= 0"),
        (int(s.random_draws) >= 1, f"paper.selection.random_draws={s.random_draws} must be >= 1"),
        (float(p.bounds.upper) > float(p.bounds.lower), f"paper.bounds.upper must exceed lower: {p.bounds}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for key in ("sources", "transfer_matrix"):
        if p[key] is not None and not Path(str(p[key])).exists():
            raise ConfigError(f"paper.{key}={p[key]} does not exist; pass a run directory / file, or null")


def load_matrix(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[float] | None, np.ndarray | None]:
    """(raw matrix, multi-task returns or None, values or None, positions or None) from an MBTL
    results.json, or from an official `<data>_transfer_result.csv` (raw returns, no header; positions =
    column index, as utils.py `import_data`)."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        multi = data.get("multitask")
        return (
            sel.check_matrix(np.array(data["matrix"])),
            None if multi is None else np.array(multi, np.float64),
            [float(v) for v in data["values"]],
            np.array(data["positions"], np.float64),
        )
    try:
        matrix = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as e:
        raise ConfigError(f"paper.transfer_matrix={path} is not a CSV of numbers ({e})") from e
    return sel.check_matrix(matrix), None, None, np.arange(len(matrix), dtype=np.float64)


def strategies(
    cfg: DictConfig, V: np.ndarray, positions: np.ndarray, multi: np.ndarray | None, steps: int
) -> dict[str, sel.Selection]:
    """Every strategy on the normalised matrix `V` (collect_result.py's set, plus multi-task)."""
    s, seed = cfg.paper.selection, int(cfg.seed)
    smoke = cfg.paper.preset == "smoke"
    out = {
        "mbtl": sel.mbtl(
            V,
            positions,
            steps,
            slope=float(s.slope),
            noise_std=float(s.noise_std),
            n_restarts=0 if smoke else int(s.n_restarts),
            seed=seed,
        ),
        "random": sel.random_selection(V, steps, 10 if smoke else int(s.random_draws), seed),
        "greedy": sel.greedy(positions, V, steps),
        "equidistant": sel.equidistant(positions, V, steps),
        "independent": sel.independent(V, steps),
        "sequential_oracle": sel.sequential_oracle(V, steps),
        "oracle_transfer": sel.oracle_transfer(V, steps),
    }
    if multi is not None:
        out["multitask"] = sel.multitask(multi, steps)
    return out


def plot(path: Path, V: np.ndarray, labels: list[str], curves: dict[str, sel.Selection], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
    im = ax0.imshow(V, interpolation="none")
    fig.colorbar(im, ax=ax0)
    ticks = range(0, len(labels), max(1, len(labels) // 8))
    ax0.set_xticks(list(ticks), [labels[i] for i in ticks])
    ax0.set_yticks(list(ticks), [labels[i] for i in ticks])
    ax0.set(xlabel="target context", ylabel="source context", title="normalised transfer matrix")
    for name, s in curves.items():
        k = np.arange(1, len(s.curve) + 1)
        ax1.plot(k, s.curve, label=name, lw=2.5 if name == "mbtl" else 1.2)
        if "std" in s.extra:
            lo, hi = np.subtract(s.curve, s.extra["std"]), np.add(s.curve, s.extra["std"])
            ax1.fill_between(k, lo, hi, alpha=0.2)
    ax1.set(xlabel="trained contexts", ylabel="generalised performance (normalised)", title=title)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@loop(validate=validate)
def run(cfg: DictConfig, ctx: RunContext) -> float:
    """Transfer matrix, then selection; returns MBTL's mean normalised generalised performance over the
    steps (collect_result.py's `Average` column)."""
    p = cfg.paper
    name = str(p.context.name)
    values, positions = grid(cfg)
    smoke = p.preset == "smoke"
    episodes = 1 if smoke else int(p.transfer.episodes)
    given = Path(str(p.transfer_matrix)) if p.transfer_matrix is not None else None
    n = len(values)
    total = 1 if given else 2 * n + int(bool(p.multitask)) + 1
    logger = RunLogger(cfg, ctx.run_dir, ctx.info["wandb_id"], total, 0, unit="stage")
    results: dict[str, Any] = {"env": str(cfg.env.name), "context": name, "source_paper": str(p.source.paper)}
    try:
        multi: np.ndarray | None = None
        if given is not None:
            raw, multi, file_values, file_positions = load_matrix(given)
            values = file_values if file_values is not None else values
            positions = file_positions if file_positions is not None else positions
            if len(values) != len(raw):  # a CSV: its own grid
                values = [float(v) for v in positions]
        else:
            done = 0

            def watch() -> None:  # the bar follows the sub-runs as they finish
                nonlocal done
                now = sum(finished(ctx.run_dir / SOURCES / value_text(v)) for v in values)
                logger.bar.update(now - done)
                done = now

            if p.sources is not None:
                runs = find_sources(Path(str(p.sources)), name, values)
                logger.bar.update(n)
            else:
                logger.status(f"training {n} sources ({p.source.paper})")
                train_sources(cfg, ctx.run_dir, values, watch)
                runs = {v: ctx.run_dir / SOURCES / value_text(v) for v in values}
                logger.bar.update(n - done)
            multi_run = None
            if p.multitask:
                logger.status("training the multi-task policy")
                multi_run = train_multitask(cfg, ctx.run_dir, values, lambda: None)
                logger.bar.update(1)
            device = resolve_device(cfg.device)
            seed = int(cfg.seed) + int(p.transfer.seed_offset)
            raw = np.zeros((n, n))
            for i, v in enumerate(values):
                logger.status(f"zero-shot transfer of source {i + 1}/{n}")
                agent, run_cfg = load_policy(runs[v], device)
                raw[i] = [zero_shot(agent, run_cfg, name, t, episodes, seed) for t in values]
                logger.log("train", {"frame": i + 1, "step": i + 1, "source": v, "returns": raw[i].tolist()})
                logger.bar.update(1)
                if ctx.stop:
                    return math.nan
            if multi_run is not None:
                agent, run_cfg = load_policy(multi_run, device)
                multi = np.array([zero_shot(agent, run_cfg, name, t, episodes, seed) for t in values])
        logger.status("selection")
        lower, upper = float(p.bounds.lower), float(p.bounds.upper)
        V = sel.normalise(raw, lower, upper)
        multi_norm = None if multi is None else sel.normalise(multi, lower, upper)
        steps = int(p.selection.steps) if p.selection.steps is not None else len(V)
        steps = min(steps, len(V))
        found = strategies(cfg, V, positions, multi_norm, steps)
        slope_fit = sel.fit_gap_slope(V, positions)
        results.update(
            values=values,
            positions=positions.tolist(),
            matrix=raw.tolist(),
            normalised=V.tolist(),
            bounds=[lower, upper],
            multitask=None if multi is None else multi.tolist(),
            slope=float(p.selection.slope),
            slope_fit=slope_fit,  # Eq. 2's θ fitted to this matrix: how well the assumed slope matches
            strategies={k: {"sources": s.sources, "curve": s.curve, **s.extra} for k, s in found.items()},
            average={k: float(np.mean(s.curve)) for k, s in found.items()},
        )
        write_json(ctx.run_dir / RESULTS, results)
        labels = [f"{v:g}" for v in values]
        plot(ctx.run_dir / FIGURE, V, labels, found, f"{cfg.env.name}: {name}")
        for k in range(steps):
            row = {f"{key}": s.curve[k] for key, s in found.items()}
            raw_mbtl = lower + (upper - lower) * found["mbtl"].curve[k]
            logger.log("eval", {"frame": k + 1, "step": k + 1, "episode_return": raw_mbtl, **row})
        logger.bar.update(1)
        return float(np.mean(found["mbtl"].curve))
    finally:
        logger.close({"mbtl_average": results.get("average", {}).get("mbtl")})


__all__ = ["FIGURE", "RESULTS", "grid", "load_matrix", "run", "strategies", "validate"]
