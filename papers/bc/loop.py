"""BC's run: keep the top `frac` of the dataset's trajectories by return, then the shared offline loop.

`paper.loop: papers.bc.loop.train`. corl-team/CORL @eeeeef2 `algorithms/offline/any_percent_bc.py`
(`keep_best_trajectories`, called in `train` before the state statistics and the replay buffer): trajectories
are ranked by their return discounted with `discount` from their first step, the best
``max(1, int(frac * E))`` of the E trajectories are kept, and everything downstream (state mean/std, the
uniform sampler) sees only them. ``frac = 1`` (CORL's "BC", configs/offline/bc/*) keeps every transition and
hands the dataset to `common.offline.loop.run_learner` unchanged; ``frac = 0.1`` with ``discount = 1``
(configs/offline/bc_10/*) is "10% BC". Reference scores always come from the dataset's metadata.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from common.errors import ConfigError
from common.loop import build_env
from common.offline import loop as offline_loop
from common.offline.data import OfflineData
from common.offline.minari_io import load_dataset
from common.registry import loop
from common.runtime import RunContext


def discounted_returns(data: OfflineData, discount: float) -> np.ndarray:
    """sum_t discount^t r_t of every episode, t counted from its first row (shape (E,), float64)."""
    n, starts = len(data), data.episode_starts
    lengths = np.diff(np.append(starts, n))
    episode = np.repeat(np.arange(len(starts)), lengths)
    t = np.arange(n) - starts[episode]
    weights = data.rewards.astype(np.float64) * np.float64(discount) ** t
    return np.bincount(episode, weights=weights, minlength=len(starts))


def keep_best_trajectories(data: OfflineData, frac: float, discount: float) -> OfflineData:
    """The best ``max(1, int(frac * E))`` episodes by discounted return (ties: the earlier episode), in
    dataset order; `data` itself when that is every episode."""
    returns = discounted_returns(data, discount)
    count = max(1, int(frac * len(returns)))
    if count >= len(returns):
        return data
    keep = np.sort(np.argsort(-returns, kind="stable")[:count])
    n, starts = len(data), data.episode_starts
    lengths = np.diff(np.append(starts, n))
    rows = np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in keep])
    return OfflineData(
        observations=data.observations[rows],
        actions=data.actions[rows],
        rewards=data.rewards[rows],
        next_observations=data.next_observations[rows],
        terminations=data.terminations[rows],
        truncations=data.truncations[rows],
        episode_starts=np.concatenate([[0], np.cumsum(lengths[keep])[:-1]]).astype(np.int64),
        metadata=dict(data.metadata),
    )


def validate(cfg: DictConfig) -> None:
    offline_loop.validate(cfg)
    frac = cfg.paper.buffer.get("frac")
    if frac is None or not 0.0 < float(frac) <= 1.0:
        raise ConfigError(
            f"paper.buffer.frac={frac} must be in (0, 1] (the top fraction of trajectories kept)"
        )


@loop(validate=validate)
def train(cfg: DictConfig, ctx: RunContext) -> float:
    """Select the top-`frac` trajectories, then train `cfg.paper.entry` on them with the shared offline loop;
    returns the final evaluation return."""
    b = cfg.paper.buffer
    env = build_env(cfg, cfg.seed)
    try:
        data = load_dataset(cfg.env.name, cfg.dataset, env.spec)
        kept = keep_best_trajectories(data, float(b.frac), float(b.discount))
        ctx.info["bc_data"] = {  # written to run.json with the dataset's provenance
            "frac": float(b.frac),
            "episodes": f"{len(kept.episode_starts)}/{len(data.episode_starts)}",
            "transitions": f"{len(kept)}/{len(data)}",
        }
        return offline_loop.run_learner(cfg, ctx, env, kept)
    finally:
        env.close()
