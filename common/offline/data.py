"""Offline transitions in memory, and the sampler offline agents train from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.buffers.base import Batch


@dataclass
class OfflineData:
    """A flat set of transitions (s, a, r, s', terminated, truncated), in episode order.

    Episode ``i`` spans rows ``episode_starts[i] : episode_starts[i + 1]`` (the last one runs to the end);
    a row with `terminated` ends its episode at a true terminal (no bootstrap), one with `truncated` at a time
    limit. `metadata` holds what the dataset recorded: `env`, `split`, `ref_min_score` (the random policy's
    average return) and `ref_max_score` (the expert's), and the producing policy.
    """

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32, in [-1, 1]
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    episode_starts: np.ndarray  # (E,) int64, ascending, first 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def episode_returns(self) -> np.ndarray:
        """The undiscounted return of every episode, shape (E,)."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def concat(self, other: OfflineData) -> OfflineData:
        """The rows of `self`, then those of `other`, as one dataset (e.g. D4RL medium-expert, or SynthER's
        real + synthetic data); neither input changes.

        Episodes never run across the seam: `other`'s first row starts an episode, so `self`'s last row
        ends one. When that row is not terminal it is marked truncated (a time-limit end: the sampler
        still bootstraps from it, and `episode_starts` agrees with the termination/truncation flags, as
        `common.offline.minari_io.write_dataset` requires). A terminal row stays terminal only.
        `metadata` is a copy of `self`'s.
        """
        n = len(self)
        truncations = self.truncations.copy()
        if n and len(other):
            truncations[-1] |= not self.terminations[-1]
        return OfflineData(
            observations=np.concatenate([self.observations, other.observations]),
            actions=np.concatenate([self.actions, other.actions]),
            rewards=np.concatenate([self.rewards, other.rewards]),
            next_observations=np.concatenate([self.next_observations, other.next_observations]),
            terminations=np.concatenate([self.terminations, other.terminations]),
            truncations=np.concatenate([truncations, other.truncations]),
            episode_starts=np.concatenate([self.episode_starts, other.episode_starts + n]).astype(np.int64),
            metadata=dict(self.metadata),
        )


class OfflineSampler:
    """Uniform minibatches of one-step transitions: ``discount = gamma * (1 - terminated)``."""

    def __init__(self, data: OfflineData, discount: float, seed: int) -> None:
        self.data = data
        self.discount = float(discount)
        self.rng = np.random.default_rng(seed)
        self._not_done = (1.0 - data.terminations.astype(np.float32))[:, None] * np.float32(self.discount)
        self._rewards = data.rewards.astype(np.float32)[:, None]

    def sample(self, batch_size: int) -> Batch:
        idx = self.rng.integers(0, len(self.data), size=batch_size)
        d = self.data
        return Batch(
            obs=d.observations[idx],
            action=d.actions[idx],
            reward=self._rewards[idx],
            discount=self._not_done[idx],
            next_obs=d.next_observations[idx],
        )

    def get_rng_state(self) -> dict[str, Any]:
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def state_statistics(observations: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature dataset mean and std + eps, as TD3+BC's `normalize_states` and CORL's `compute_mean_std`
    (numpy std with ddof 0; both use eps 1e-3), computed in float64 and returned as float32."""
    obs = observations.astype(np.float64)
    return obs.mean(0).astype(np.float32), (obs.std(0) + eps).astype(np.float32)
