"""The run of `paper=distributional_dp`: one objective on one tabular MDP, solved five ways and compared.

`paper.loop: papers.distributional_dp.loop.run`. Methods, each logged per iteration to train.jsonl
(iteration, objective value at the start, Bellman residual) with the progress bar counting methods:
- `stock_vi`, `stock_pi`: distributional value / policy iteration on the stock-augmented MDP (the paper's);
- `classic_vi`: value iteration on the MDP, its greedy policy judged by the objective;
- `distributional_vi`: distributional value iteration without the stock (greedy on the objective of the
  return-to-go), its policy judged by the objective;
- `brute_force`: the best value over every deterministic history-dependent policy (MDPs whose episodes
  always end; skipped with the reason otherwise);
- `deep` (only with `paper.deep.enabled`): a categorical DQN on the stock-augmented observation (deep.py),
  trained from samples for `paper.deep.num_steps` env steps with the run's seed, its greedy policy evaluated
  exactly; logged every 100 steps (the loss).
Every method's final value is the objective of its policy's exact return distribution. They are written to
`results.json` and as one eval.jsonl row; the run's score is `stock_vi`'s value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from omegaconf import DictConfig

from common.errors import ConfigError
from common.logger import RunLogger
from common.mdp.catalog import make_mdp
from common.mdp.solve import backup
from common.mdp.tabular import TabularMDP
from common.registry import loop
from common.runtime import RunContext, write_json
from papers.distributional_dp.brute_force import brute_force_optimum
from papers.distributional_dp.deep import DeepSettings, train_deep
from papers.distributional_dp.dp import (
    AugmentedDP,
    Solution,
    base_distributional_vi,
    classic_policy,
    evaluate_base_policy,
    grid,
)
from papers.distributional_dp.objectives import Objective
from papers.distributional_dp.stock import augment, on_grid, return_bounds

METHODS = ("stock_vi", "stock_pi", "classic_vi", "distributional_vi", "brute_force")
RESULTS = "results.json"


def objective_of(cfg: DictConfig) -> Objective:
    p = cfg.paper
    return Objective(str(p.objective), alpha=float(p.alpha), tau=float(p.tau))


def build(cfg: DictConfig) -> tuple[TabularMDP, Objective, AugmentedDP]:
    """The MDP, the objective and the solver on the stock-augmented MDP (one-line errors for bad input)."""
    if cfg.env.get("suite") != "tabular":
        raise ConfigError(
            f"paper=distributional_dp solves tabular MDPs: env={cfg.env.name} is not one (suite "
            f"{cfg.env.get('suite')!r}); choose env=mdp_gamble, mdp_risky_shortcut, mdp_chain, mdp_gridworld "
            f"or mdp_minigrid"
        )
    objective = objective_of(cfg)
    step = float(cfg.paper.stock.step)
    if step <= 0:
        raise ConfigError(f"paper.stock.step={step} must be positive")
    if objective.name in ("threshold", "homeostatic") and not on_grid(objective.tau, step):
        raise ConfigError(f"paper.tau={objective.tau} must be a multiple of paper.stock.step={step}")
    mdp = make_mdp(cfg.env)
    lo, hi = return_bounds(mdp)
    choose = objective.initial_stocks(grid(lo, hi, step))
    aug = augment(mdp, sorted({*choose.tolist(), 0.0}), step, int(cfg.paper.stock.max_states))
    return mdp, objective, AugmentedDP(aug, objective, choose.tolist())


def validate(cfg: DictConfig) -> None:
    t = cfg.paper.train
    if int(t.num_steps) < 1:
        raise ConfigError(
            f"paper.train.num_steps={t.num_steps} must be >= 1 (the most iterations of each DP)"
        )
    if not float(t.tol) >= 0:
        raise ConfigError(f"paper.train.tol={t.tol} must be >= 0")
    _, _, dp = build(cfg)  # the objective, the env, and the augmented MDP's size: before the run directory
    if _deep_enabled(cfg):
        DeepSettings.from_config(cfg.paper.deep)
        if dp.aug.mdp.gamma != 1.0:
            raise ConfigError(
                f"paper.deep needs an undiscounted MDP (gamma = 1); env={cfg.env.name} has {dp.aug.mdp.gamma}"
            )


def _deep_enabled(cfg: DictConfig) -> bool:
    return bool(cfg.paper.get("deep") is not None and cfg.paper.deep.get("enabled", False))


def _summary(s: Solution) -> dict[str, Any]:
    keep = s.probs > 1e-12
    return {
        "value": s.value,
        "iterations": s.iterations,
        "initial_stock": s.initial_stock,
        "return_distribution": {
            f"{g:g}": float(p) for g, p in zip(s.returns[keep], s.probs[keep], strict=True)
        },
    }


@loop(validate=validate)
def run(cfg: DictConfig, ctx: RunContext) -> float:
    """Solve `paper.objective` on the env's MDP with each method; returns stock_vi's objective value."""
    mdp, objective, dp = build(cfg)
    tol, max_it = float(cfg.paper.train.tol), int(cfg.paper.train.num_steps)
    methods = (*METHODS, "deep") if _deep_enabled(cfg) else METHODS
    logger = RunLogger(cfg, ctx.run_dir, ctx.info["wandb_id"], len(methods), 0, unit="method")
    rows = 0

    def logging(method: str):  # noqa: ANN202
        def on_iteration(iteration: int, value: float, residual: float) -> None:
            nonlocal rows
            rows += 1
            row = {
                "frame": rows,
                "step": rows,
                "method": method,
                "iteration": iteration,
                "objective": value,
                "bellman_residual": residual,
            }
            logger.log("train", row)

        return on_iteration

    results: dict[str, Any] = {}
    try:
        for method in methods:
            if ctx.stop:
                return math.nan
            logger.status(method)
            if method == "stock_vi":
                results[method] = _summary(dp.value_iteration(tol, max_it, logging(method)))
            elif method == "stock_pi":
                results[method] = _summary(dp.policy_iteration(tol, max_it, logging(method)))
            elif method == "classic_vi":
                log, V = logging(method), np.zeros(mdp.num_states)
                # value iteration sweep by sweep (common.mdp.value_iteration, with a row per sweep)
                for k in range(1, max_it + 1):
                    new = np.where(mdp.terminal, 0.0, backup(mdp, V).max(1))
                    residual = float(np.abs(new - V).max())
                    V = new
                    log(k, float(mdp.initial @ V), residual)
                    if residual <= tol:
                        break
                solved = evaluate_base_policy(dp, classic_policy(mdp, tol, max_it), tol, max_it)
                solved.iterations = k
                results[method] = _summary(solved)
            elif method == "distributional_vi":
                policy = base_distributional_vi(mdp, objective, dp.aug.step, tol, max_it, logging(method))
                results[method] = _summary(evaluate_base_policy(dp, policy, tol, max_it))
            elif method == "deep":

                def on_progress(env_steps: int, loss: float) -> None:
                    nonlocal rows
                    if math.isfinite(loss):  # no loss before the first update
                        rows += 1
                        row = {"frame": rows, "step": rows, "method": "deep", "env_steps": env_steps}
                        logger.log("train", {**row, "loss": loss})

                settings = DeepSettings.from_config(cfg.paper.deep)
                solved = train_deep(
                    dp, settings, int(cfg.seed), tol, max_it, on_progress, should_stop=lambda: bool(ctx.stop)
                )
                if ctx.stop:
                    return math.nan
                results[method] = _summary(solved)
            else:
                try:
                    value, dist = brute_force_optimum(mdp, objective)
                    results[method] = {"value": value, "return_distribution": {f"{g:g}": p for g, p in dist}}
                except ValueError as e:
                    results[method] = {"value": None, "skipped": str(e)}
            logger.bar.update(1)
        values = {m: results[m]["value"] for m in methods}
        summary = {
            "objective": objective.name,
            "alpha": objective.alpha,
            "tau": objective.tau,
            "env": cfg.env.name,
            "mdp_states": mdp.num_states,
            "augmented_states": dp.aug.num_states,
            "atoms": len(dp.atoms),
            "values": values,
            "methods": results,
        }
        write_json(ctx.run_dir / RESULTS, summary)
        score = float(values["stock_vi"])
        logger.log(
            "eval",
            {
                "frame": rows,
                "step": rows,
                "episode_return": score,
                **{f"value_{m}": v for m, v in values.items()},
            },
        )
        return score
    finally:
        logger.close({f"value_{m}": r.get("value") for m, r in results.items()})


__all__ = ["METHODS", "RESULTS", "run", "validate"]
