"""The paper's two dataset measures, TQ and SACo (Sec. 3 "Dataset characteristics"), computed exactly.

kschweig/OfflineRL @478661f: the episode returns are `Evaluator.get_returns` (source/offline_ds_evaluation/
evaluator.py: sums of rewards up to each `done`; rows after the last `done` are dropped), the normalisation is
source/plotting/create_plots.py (`(result - random_return) / (np.max(online DQN returns) - random_return)`,
`result / online_usap` with the replay ("er") dataset's count), the counting is `get_unique_state_actions`
(every state axis and the action digitised into `np.linspace(min, max, num=100)` bins, then counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from common.errors import ConfigError


def episode_returns(rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
    """Undiscounted returns of the episodes that end with `done` (`get_returns`); a trailing, unfinished
    episode is left out. Shape (E,), float64."""
    rewards = np.asarray(rewards, np.float64).reshape(-1)
    ends = np.flatnonzero(np.asarray(dones, bool).reshape(-1))
    if ends.size == 0:
        return np.zeros(0)
    sums = np.cumsum(rewards)[ends]
    return np.diff(np.concatenate([[0.0], sums]))


def trajectory_quality(mean_return: float, random_return: float, online_best: float) -> float:
    """Eq. (TQ) = (mean episode return of the dataset - that of the random dataset) / (the online run's best
    evaluation return - that of the random dataset). NaN when the online run never did better than random
    (the denominator is 0: no scale to measure quality on; the run says so)."""
    return scaled(mean_return, random_return, online_best)


def scaled(value: float, random_return: float, online_best: float) -> float:
    """(value - random) / (online best - random): TQ's and the learners' normalisation; NaN on a zero span."""
    span = online_best - random_return
    return float((value - random_return) / span) if span != 0 else float("nan")


def discretise(states: np.ndarray, actions: np.ndarray, limits: np.ndarray | None, bins: int) -> np.ndarray:
    """The rows [s, a] with every column replaced by its bin index: ``np.digitize(x, linspace(lo, hi, bins))``
    (`get_unique_states`). `limits` (D + 1, 2): (lo, hi) per column; None: the columns' own min and max."""
    rows = np.concatenate(
        [
            np.asarray(states, np.float64).reshape(len(states), -1),
            np.asarray(actions, np.float64).reshape(-1, 1),
        ],
        axis=1,
    )
    if limits is None:
        limits = sa_limits(states, actions)
    out = np.empty(rows.shape, np.int64)
    for axis in range(rows.shape[1]):
        lo, hi = limits[axis]
        out[:, axis] = np.digitize(rows[:, axis], np.linspace(lo, hi, num=bins))
    return out


def sa_limits(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Per-column (min, max) of [s, a] (ex_01.py `assess_env`: from the replay dataset), shape (D + 1, 2)."""
    rows = np.concatenate(
        [
            np.asarray(states, np.float64).reshape(len(states), -1),
            np.asarray(actions, np.float64).reshape(-1, 1),
        ],
        axis=1,
    )
    return np.stack([rows.min(0), rows.max(0)], axis=1)


def unique_state_actions(
    states: np.ndarray, actions: np.ndarray, limits: np.ndarray | None, bins: int
) -> int:
    """The number of distinct discretised state-action pairs, counted exactly.

    DEVIATION: the official code estimates this count with a HyperLogLog sketch (relative error
    0.01); we count the distinct rows exactly (`np.unique`); the two agree up to the sketch's error.
    """
    if len(states) == 0:
        return 0
    return int(np.unique(discretise(states, actions, limits, bins), axis=0).shape[0])


def saco(count: int, reference_count: int) -> float:
    """Eq. (SACo) = unique state-action pairs of the dataset / those of the reference (replay) dataset."""
    return float(count / reference_count)


def check_deterministic(env_cfg: Mapping[str, Any]) -> None:
    """SACo counts state-action pairs as a measure of exploration, which assumes deterministic transitions
    (Sec. 3): refuse envs made stochastic by sticky actions."""
    p = env_cfg.get("sticky_action_prob")
    if p is not None and float(p) > 0:
        raise ConfigError(
            f"SACo assumes a deterministic env, but env={env_cfg.get('name')} has sticky_action_prob={p}; "
            f"set env.sticky_action_prob=0"
        )
