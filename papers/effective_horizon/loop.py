"""The run of `paper=effective_horizon`: one env, enumerated into a tabular MDP with sticky actions, analysed
exactly and solved by SQIRL (and optionally GORP) at the smallest sample budget that finds an optimal policy.

`paper.loop: papers.effective_horizon.loop.run`. `env=minigrid env.id=<MiniGrid id>` (sticky actions with
probability `env.sticky_action_prob`, or the paper's 0.25 when it is 0: `paper.sticky`) or any
`suite: tabular` env (conf/env/mdp_*.yaml). Writes `results.json` (the `horizon.HorizonAnalysis` fields,
the solved threshold, SQIRL's search per k and its sample complexity = the smallest over k), a train.jsonl
row per tried (k, m), one eval.jsonl row with the headline numbers; the progress bar counts the searches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from omegaconf import DictConfig

from common.envs.minigrid import bridge_actions
from common.errors import ConfigError
from common.logger import RunLogger
from common.mdp.catalog import _check_minigrid_id, make_mdp
from common.mdp.enumerate import enumerate_mdp
from common.mdp.minigrid import MiniGridEnumerable
from common.mdp.tabular import TabularMDP
from common.registry import loop
from common.runtime import RunContext, write_json
from papers.effective_horizon.agents import (
    NeuralRegressor,
    Regressor,
    SearchResult,
    Simulator,
    TabularRegressor,
    gorp,
    policy_return,
    search_m,
    sqirl,
)
from papers.effective_horizon.horizon import analyze

RESULTS = "results.json"
REGRESSORS = ("neural", "tabular", "tabular_stationary")


def minigrid_features(states: list[Any], num_actions: int) -> np.ndarray:
    """Symbolic features of enumerated MiniGrid states: the grid encoding (object, colour, state per cell,
    scaled), the agent's cell and direction one-hot, the carried object and the previous action one-hot."""
    cells = sorted({task[0] for task, _ in states})  # every agent position that occurs
    where_index = {c: i for i, c in enumerate(cells)}
    rows = []
    for task, previous in states:
        pos, direction, grid, carrying = task
        where = np.zeros(len(cells), np.float32)
        where[where_index[pos]] = 1.0
        last = np.zeros(num_actions + 1, np.float32)
        last[previous + 1] = 1.0  # previous = -1 before the first step
        rows.append(
            np.concatenate(
                [
                    np.frombuffer(grid, np.uint8).astype(np.float32) / 10.0,
                    where,
                    np.eye(4, dtype=np.float32)[direction],
                    np.asarray(carrying if carrying is not None else (0, 0, 0), np.float32) / 10.0,
                    last,
                ]
            )
        )
    return np.stack(rows)


def build(cfg: DictConfig) -> tuple[TabularMDP, np.ndarray, int, dict[str, Any]]:
    """The MDP, state features for the neural regressor, the horizon T and a description; one-line errors."""
    p, env = cfg.paper, cfg.env
    suite = env.get("suite")
    limit = int(p.max_states)
    if suite == "minigrid":
        env_id = str(env.id)
        _check_minigrid_id(env_id)
        sticky = float(env.get("sticky_action_prob", 0.0)) or float(p.sticky)
        actions = bridge_actions(env_id) if p.num_actions == "bridge" else int(p.num_actions)
        enumerated = enumerate_mdp(
            lambda: MiniGridEnumerable(env_id, sticky, actions, int(p.layout_seed), float(p.gamma)),
            limit,
            name=env_id,
        )
        features = minigrid_features(enumerated.states, actions)
        horizon = int(env.max_episode_frames or p.horizon)
        info = {"env_id": env_id, "sticky": sticky, "num_actions": actions}
        return enumerated.mdp, features, horizon, info
    if suite == "tabular":
        horizon = env.get("horizon")
        if horizon is None:
            raise ConfigError(f"env={env.name} has no horizon; set env.horizon=<T> (SQIRL's episode length)")
        mdp = make_mdp({**env, "horizon": None})
        return mdp, np.eye(mdp.num_states, dtype=np.float32), int(horizon), {"env_id": str(env.name)}
    raise ConfigError(
        f"paper=effective_horizon enumerates an env into a tabular MDP: env={env.name} (suite {suite!r}) is "
        f"not one; choose env=minigrid env.id=<MiniGrid id> or a tabular env such as env=mdp_minigrid"
    )


def validate(cfg: DictConfig) -> None:
    p = cfg.paper
    if p.regressor not in REGRESSORS:
        raise ConfigError(f"paper.regressor={p.regressor!r} must be one of {', '.join(REGRESSORS)}")
    if p.num_actions != "bridge" and not (isinstance(p.num_actions, int) and p.num_actions >= 1):
        raise ConfigError(f"paper.num_actions={p.num_actions!r} must be 'bridge' or an integer >= 1")
    for key in ("max_k", "runs", "horizon", "max_states"):
        if int(p[key]) < 1:
            raise ConfigError(f"paper.{key}={p[key]} must be >= 1")
    if not 0.0 <= float(p.tol) < 1.0:
        raise ConfigError(f"paper.tol={p.tol} must be in [0, 1) (a fraction of optimal - random return)")
    if not 0.0 < float(p.sqirl_gamma) <= 1.0:
        raise ConfigError(f"paper.sqirl_gamma={p.sqirl_gamma} must be in (0, 1]")
    if not 0.0 <= float(p.sticky) < 1.0:
        raise ConfigError(f"paper.sticky={p.sticky} must be in [0, 1)")
    if int(p.train.num_frames) < 1:
        raise ConfigError(f"paper.train.num_frames={p.train.num_frames} must be >= 1 (SQIRL's step budget)")
    build(cfg)  # the env id and its size: refused before the run directory exists


def _regressor(cfg: DictConfig, features: np.ndarray, horizon: int, mdp: TabularMDP, seed: int) -> Regressor:
    if cfg.paper.regressor in ("tabular", "tabular_stationary"):
        stationary = cfg.paper.regressor == "tabular_stationary"
        return TabularRegressor(horizon, mdp.num_states, mdp.num_actions, stationary)
    n = cfg.paper.network
    return NeuralRegressor(
        features,
        horizon,
        mdp.num_actions,
        hidden=tuple(int(h) for h in n.hidden),
        lr=float(n.lr),
        batch_size=int(n.batch_size),
        epochs=int(n.epochs),
        min_updates=int(n.min_updates),
        seed=seed,
    )


def _summary(r: SearchResult) -> dict[str, Any]:
    return {"k": r.k, "m": r.m, "sample_complexity": r.sample_complexity, "tried": r.tried}


@loop(validate=validate)
def run(cfg: DictConfig, ctx: RunContext) -> float:
    """Analyse the env's MDP, search SQIRL's (and GORP's) sample complexity; returns SQIRL's (nan: none)."""
    p = cfg.paper
    mdp, features, T, info = build(cfg)
    smoke = p.preset == "smoke"  # debug=smoke: a quick pass through every stage
    runs = 1 if smoke else int(p.runs)
    ks = list(range(1, (min(2, int(p.max_k)) if smoke else int(p.max_k)) + 1))
    gorp_ks = list(range(1, int(p.gorp.max_k) + 1)) if p.gorp.enabled else []
    logger = RunLogger(cfg, ctx.run_dir, ctx.info["wandb_id"], 1 + len(ks) + len(gorp_ks), 0, unit="search")
    sim, seed, budget = Simulator(mdp), int(cfg.seed), int(p.train.num_frames)
    rows = 0
    results: dict[str, Any] = {"env": cfg.env.name, **info, "horizon": T, "regressor": str(p.regressor)}
    try:
        logger.status("exact analysis")
        analysis = analyze(mdp, T, int(p.max_k))
        results["analysis"] = analysis.to_json()
        logger.bar.update(1)
        optimal = analysis.optimal_return
        # success: a return within tol of the way from the random policy's return to the optimum
        tol = float(p.tol) * (optimal - analysis.random_return)
        results["threshold"] = optimal - tol

        def evaluate(policy: np.ndarray) -> float:
            return policy_return(sim, T, policy)

        def logging(method: str, k: int):  # noqa: ANN202
            def on_try(m: int, median: float) -> None:
                nonlocal rows
                rows += 1
                row = {"frame": rows, "step": rows, "method": method, "k": k, "m": m, "median_steps": median}
                logger.log("train", row)

            return on_try

        searches: dict[str, dict[int, SearchResult]] = {"sqirl": {}, "gorp": {}}
        for k in ks:
            if ctx.stop:
                return math.nan
            logger.status(f"sqirl k={k}")

            def learn_sqirl(m: int, rng: np.random.Generator, k: int = k):  # noqa: ANN202
                regressor = _regressor(cfg, features, T, mdp, int(rng.integers(2**31)))
                return sqirl(sim, T, k, m, regressor, rng, float(p.sqirl_gamma))

            searches["sqirl"][k] = search_m(
                learn_sqirl, evaluate, optimal, k, runs, seed, tol, budget, T * T, logging("sqirl", k)
            )
            logger.bar.update(1)
        for k in gorp_ks:
            if ctx.stop:
                return math.nan
            logger.status(f"gorp k={k}")

            def learn_gorp(m: int, rng: np.random.Generator, k: int = k):  # noqa: ANN202
                return gorp(sim, T, k, m, rng)

            per_m = T * T * mdp.num_actions**k
            searches["gorp"][k] = search_m(
                learn_gorp, evaluate, optimal, k, runs, seed, tol, budget, per_m, logging("gorp", k)
            )
            logger.bar.update(1)
        for method, found in searches.items():
            results[method] = {str(k): _summary(r) for k, r in found.items()}
            best = min((r.sample_complexity for r in found.values()), default=math.inf)
            results[f"{method}_sample_complexity"] = best if found else None
        write_json(ctx.run_dir / RESULTS, results)
        score = results["sqirl_sample_complexity"]
        logger.log(
            "eval",
            {
                "frame": rows,
                "step": rows,
                "episode_return": optimal,  # the optimal return
                "threshold": results["threshold"],  # what a policy's return must reach to count as solved
                "random_return": analysis.random_return,
                "min_k": analysis.min_k,
                "effective_horizon": analysis.effective_horizon,
                "sqirl_sample_complexity": score,
                "gorp_sample_complexity": results["gorp_sample_complexity"],
            },
        )
        return float(score) if math.isfinite(score) else math.nan
    finally:
        logger.close({"sqirl_sample_complexity": results.get("sqirl_sample_complexity")})


__all__ = ["RESULTS", "build", "run", "validate"]
