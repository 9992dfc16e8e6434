"""Start training episodes from saved simulator states: the environment change of Snapshot RL (Zhao et al.,
2024, arXiv 2403.00673), which any agent can train on unchanged.

`SnapshotStarts(env, load, truncate_steps, snapshot_steps, seed)` wraps a Gymnasium MuJoCo `Env`. For the
first `snapshot_steps` env steps it counts, every `reset()` draws a cluster uniformly, then a snapshot of
that cluster uniformly, and starts the episode there (`common.envs.reset_state.reset_to`); such an episode
is truncated (a time-limit end: the agent bootstraps) after `truncate_steps` steps, or when the snapshot
phase ends inside it. From then on, `reset()` is the env's own. `load()` returns the `SnapshotSet`; it is
called at the first snapshot start (a resumed run restores the set from its checkpoint instead, so the
source need not exist any more). Wrap only training envs: evaluation starts from the env's own initial
distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.envs.base import Env, Step, env_state
from common.envs.reset_state import Snapshot, reset_to
from common.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class SnapshotSet:
    """N simulator states and the cluster of each: `qpos` (N, nq) and `qvel` (N, nv) float64, `cluster` (N,)
    int labels (any values; each distinct label is one cluster)."""

    qpos: np.ndarray
    qvel: np.ndarray
    cluster: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.cluster)
        if n == 0 or len(self.qpos) != n or len(self.qvel) != n:
            raise ConfigError(
                f"a snapshot set needs as many qpos ({len(self.qpos)}), qvel ({len(self.qvel)}) and cluster "
                f"labels ({n}), at least one"
            )

    def members(self) -> list[np.ndarray]:
        """The snapshot indices of each cluster, clusters in ascending label order."""
        return [np.flatnonzero(self.cluster == label) for label in np.unique(self.cluster)]

    def __getitem__(self, i: int) -> Snapshot:
        return Snapshot(self.qpos[i], self.qvel[i])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "qpos": torch.from_numpy(np.array(self.qpos, np.float64)),
            "qvel": torch.from_numpy(np.array(self.qvel, np.float64)),
            "cluster": torch.from_numpy(np.array(self.cluster, np.int64)),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SnapshotSet:
        return cls(state["qpos"].numpy(), state["qvel"].numpy(), state["cluster"].numpy())


class SnapshotStarts:
    """Snapshot starts and their truncation for the first `snapshot_steps` steps (see the module docstring).

    Each step's `info["snapshot"]` says whether its episode began at a snapshot. `get_rng_state` holds the
    selection RNG, the step count and the snapshot set (once loaded), so a resume continues the schedule.
    """

    def __init__(
        self,
        env: Env,
        load: Callable[[], SnapshotSet],
        *,
        truncate_steps: int,
        snapshot_steps: int,
        seed: int,
    ) -> None:
        for key, value, low in (("truncate_steps", truncate_steps, 1), ("snapshot_steps", snapshot_steps, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"snapshot {key} must be an integer >= {low}, got {value!r}")
        self._env, self._load = env, load
        self.spec = env.spec
        self.truncate_steps, self.snapshot_steps = truncate_steps, snapshot_steps
        self._rng = np.random.default_rng(seed)
        self._set: SnapshotSet | None = None
        self._steps = 0  # env steps taken through this wrapper, over all episodes
        self._t = 0  # steps into the current episode
        self._from_snapshot = False  # the current episode began at a snapshot

    @property
    def snapshots(self) -> SnapshotSet:
        if self._set is None:
            self._set = self._load()
        return self._set

    @property
    def in_snapshot_phase(self) -> bool:
        return self._steps < self.snapshot_steps

    def reset(self) -> Step:
        self._t = 0
        self._from_snapshot = self.in_snapshot_phase
        if not self._from_snapshot:
            return self._env.reset()
        # S3RL: a cluster uniformly, then a snapshot of it uniformly (snapshotrl SnapshotEnv.reset:
        # random.choice(random.choice(clustered_data))).
        clusters = self.snapshots.members()
        members = clusters[int(self._rng.integers(len(clusters)))]
        index = int(members[int(self._rng.integers(len(members)))])
        first = reset_to(self._env, self.snapshots[index])
        first.info = {**first.info, "snapshot": True, "snapshot_index": index}
        return first

    def step(self, action: np.ndarray) -> Step:
        ts = self._env.step(action)
        self._steps += 1
        self._t += 1
        if self._from_snapshot and not ts.done:
            # Student trajectory truncation: the snapshot episode ends `truncate_steps` after its start
            # (snapshotrl: TimeLimit._max_episode_steps = elapsed + truncate_step), and with the phase.
            ts.truncated = self._t >= self.truncate_steps or not self.in_snapshot_phase
        ts.info = {**ts.info, "snapshot": self._from_snapshot}
        return ts

    def get_rng_state(self) -> dict[str, Any]:
        return {
            "env": self._env.get_rng_state(),
            "snapshot_rng": self._rng.bit_generator.state,
            "snapshot_steps_taken": self._steps,
            "snapshots": None if self._set is None else self._set.state_dict(),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            self._env.set_rng_state(state["env"])
            self._rng.bit_generator.state = state["snapshot_rng"]
            self._steps = int(state["snapshot_steps_taken"])
            saved = state["snapshots"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a SnapshotStarts RNG state ({type(exc).__name__}: {exc})") from exc
        if saved is not None:
            self._set = SnapshotSet.from_state_dict(saved)

    def get_state(self) -> dict[str, Any] | None:
        inner = env_state(self._env)
        if inner is None:
            return None
        return {"env": inner, "t": self._t, "from_snapshot": self._from_snapshot}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env.set_state(state["env"])  # type: ignore[attr-defined]  # get_state returned it
        self._t, self._from_snapshot = int(state["t"]), bool(state["from_snapshot"])

    def close(self) -> None:
        self._env.close()
