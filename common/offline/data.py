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
    """Uniform minibatches of one-step transitions: ``discount = gamma * (1 - terminated)``.

    `reserve` > 0 leaves room for that many rows `add`ed after the dataset's (online fine-tuning: the replay
    buffer starts as the dataset and grows, as ikostrikov/implicit_q_learning train_finetune.py's
    `initialize_with_dataset` + `insert`); batches are drawn from every row held so far.
    """

    def __init__(self, data: OfflineData, discount: float, seed: int, reserve: int = 0) -> None:
        self.data = data
        self.discount = float(discount)
        self.rng = np.random.default_rng(seed)
        n = len(data)
        not_done = (1.0 - data.terminations.astype(np.float32))[:, None] * np.float32(self.discount)
        rewards = data.rewards.astype(np.float32)[:, None]
        if reserve <= 0:  # no copies of the dataset's arrays
            self.obs, self.actions, self.next_obs = data.observations, data.actions, data.next_observations
            self.rewards, self.not_done = rewards, not_done
        else:

            def grown(a: np.ndarray) -> np.ndarray:
                out = np.zeros((n + reserve, *a.shape[1:]), dtype=a.dtype)
                out[:n] = a
                return out

            self.obs, self.actions = grown(data.observations), grown(data.actions)
            self.next_obs, self.rewards, self.not_done = (
                grown(data.next_observations),
                grown(rewards),
                grown(not_done),
            )
        self.dataset_rows, self.size = n, n

    def sample(self, batch_size: int) -> Batch:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return Batch(
            obs=self.obs[idx],
            action=self.actions[idx],
            reward=self.rewards[idx],
            discount=self.not_done[idx],
            next_obs=self.next_obs[idx],
        )

    def add(
        self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool
    ) -> None:
        """Append one transition (a time-limit end is not terminal: it still bootstraps)."""
        if self.size >= len(self.rewards):
            raise RuntimeError(f"the sampler holds {self.size} rows and has no room reserved for more")
        i = self.size
        self.obs[i], self.actions[i], self.next_obs[i] = obs, action, next_obs
        self.rewards[i, 0] = reward
        self.not_done[i, 0] = 0.0 if terminated else self.discount
        self.size += 1

    def added_rows(self) -> dict[str, np.ndarray]:
        """The rows `add`ed so far (what a checkpoint keeps; the dataset rows come from the dataset)."""
        sl = slice(self.dataset_rows, self.size)
        return {k: getattr(self, k)[sl].copy() for k in ("obs", "actions", "next_obs", "rewards", "not_done")}

    def load_added_rows(self, rows: dict[str, np.ndarray]) -> None:
        m = len(rows["rewards"])
        for k, v in rows.items():
            getattr(self, k)[self.dataset_rows : self.dataset_rows + m] = np.asarray(v)
        self.size = self.dataset_rows + m

    def get_rng_state(self) -> dict[str, Any]:
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def state_statistics(observations: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature dataset mean and std + eps, as TD3+BC's `normalize_states` and CORL's `compute_mean_std`
    (numpy std with ddof 0; both use eps 1e-3), computed in float64 and returned as float32."""
    obs = observations.astype(np.float64)
    return obs.mean(0).astype(np.float32), (obs.std(0) + eps).astype(np.float32)
