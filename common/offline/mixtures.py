"""Dataset compositions for offline imitation: a few expert demonstrations plus a mixed, mostly suboptimal
pool, built exactly and reproducibly from two D4RL-protocol splits.

The protocol is ReCOIL's (Sikchi et al., ICLR 2024, "Dual RL", Sec. 6 / App.; hari-sikchi/ReCOIL @85662f4
offline/train_offline_imitate.py and dataset_utils.py `D4RLMixedDataset`, after SMODICE): the learner sees
the expert demonstrations (there: the first 1000 expert transitions, one trajectory) and a pool made of the
whole suboptimal split followed by `pool_expert_episodes` expert trajectories (there: the first 200; 100 on
walker2d), the demonstrations among them. Here the expert episodes are chosen by a seeded permutation
instead of file order; the demonstrations are the permutation's first `num_expert_episodes`, the pool's
expert part its first `pool_expert_episodes`, so the demonstrations lie in the pool whenever
``pool_expert_episodes >= num_expert_episodes``, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.offline.data import OfflineData


def episode_lengths(data: OfflineData) -> np.ndarray:
    """Rows per episode, shape (E,)."""
    return np.diff(np.append(data.episode_starts, len(data)))


def select_episodes(data: OfflineData, episodes: np.ndarray) -> OfflineData:
    """The rows of `episodes` (indices into `data`'s episodes), in the given order, as a new dataset whose
    episode boundaries and termination/truncation flags are those of the source; metadata copied."""
    lengths = episode_lengths(data)
    episodes = np.asarray(episodes, dtype=np.int64)
    if len(episodes) == 0:
        rows = np.zeros(0, np.int64)
    else:
        rows = np.concatenate(
            [np.arange(data.episode_starts[i], data.episode_starts[i] + lengths[i]) for i in episodes]
        )
    starts = np.concatenate([[0], np.cumsum(lengths[episodes])[:-1]]) if len(episodes) else np.zeros(0)
    return OfflineData(
        observations=data.observations[rows],
        actions=data.actions[rows],
        rewards=data.rewards[rows],
        next_observations=data.next_observations[rows],
        terminations=data.terminations[rows],
        truncations=data.truncations[rows],
        episode_starts=starts.astype(np.int64),
        metadata=dict(data.metadata),
    )


@dataclass
class Mixture:
    """The expert demonstrations and the pool (suboptimal rows first, then the pool's expert episodes);
    `info` records the composition (episode indices into the expert split, counts)."""

    expert: OfflineData
    pool: OfflineData
    info: dict[str, Any]


def compose_mixture(
    expert: OfflineData,
    suboptimal: OfflineData,
    num_expert_episodes: int,
    pool_expert_episodes: int,
    seed: int,
) -> Mixture:
    """Demonstrations and pool from an expert split and a suboptimal split (see the module docstring).

    ``perm = np.random.default_rng(seed).permutation(E)`` over the expert split's E episodes; demonstrations
    = episodes ``perm[:num_expert_episodes]``; pool = every suboptimal row, then episodes
    ``perm[:min(pool_expert_episodes, E)]``. Raises ValueError when `num_expert_episodes` is not in [1, E]
    or `pool_expert_episodes` is negative. Neither input changes; the pool's metadata is the suboptimal
    split's (the reference returns are the env's).
    """
    num_episodes = len(expert.episode_starts)
    if not 1 <= num_expert_episodes <= num_episodes:
        raise ValueError(f"num_expert_episodes={num_expert_episodes} must be in [1, {num_episodes}]")
    if pool_expert_episodes < 0:
        raise ValueError(f"pool_expert_episodes={pool_expert_episodes} must be >= 0")
    perm = np.random.default_rng(seed).permutation(num_episodes)
    demo_idx = perm[:num_expert_episodes]
    pool_idx = perm[: min(pool_expert_episodes, num_episodes)]
    demos = select_episodes(expert, demo_idx)
    pool_expert = select_episodes(expert, pool_idx)
    pool = suboptimal.concat(pool_expert) if len(pool_idx) else suboptimal
    info = {
        "seed": int(seed),
        "expert_episodes": [int(i) for i in demo_idx],
        "expert_transitions": len(demos),
        "pool_expert_episodes": len(pool_idx),
        "pool_suboptimal_transitions": len(suboptimal),
        "pool_transitions": len(pool),
    }
    return Mixture(expert=demos, pool=pool, info=info)
