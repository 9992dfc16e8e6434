"""A transition as one standardised vector ``[s, a, r, s', (done)]`` (SynthER diffusion/utils.py, norm.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.buffers.diffusion.config import Transitions


@dataclass(frozen=True)
class TransitionLayout:
    """Where each part of a transition sits in the flat vector ``[s, a, r, s', (done)]``."""

    obs_dim: int
    action_dim: int
    terminals: bool

    @property
    def dim(self) -> int:
        return 2 * self.obs_dim + self.action_dim + 1 + int(self.terminals)

    @property
    def reward_index(self) -> int:
        return self.obs_dim + self.action_dim

    def flatten(self, t: Transitions) -> np.ndarray:
        parts = [
            np.asarray(t["observations"], np.float32).reshape(-1, self.obs_dim),
            np.asarray(t["actions"], np.float32).reshape(-1, self.action_dim),
            np.asarray(t["rewards"], np.float32).reshape(-1, 1),
            np.asarray(t["next_observations"], np.float32).reshape(-1, self.obs_dim),
        ]
        if self.terminals:
            parts.append(np.asarray(t["terminations"], np.float32).reshape(-1, 1))
        return np.concatenate(parts, axis=1)

    def split(self, x: np.ndarray) -> Transitions:
        """Inverse of `flatten`; `terminations` holds the raw (float) done dim, zeros when not modelled."""
        o, a = self.obs_dim, self.action_dim
        return {
            "observations": x[:, :o],
            "actions": x[:, o : o + a],
            "rewards": x[:, o + a],
            "next_observations": x[:, o + a + 1 : 2 * o + a + 1],
            "terminations": x[:, -1] if self.terminals else np.zeros(len(x), np.float32),
        }


class StandardNormalizer:
    """Per-dimension ``(x - mean) / (std + 1e-5)``; `skip_dims` pass through unchanged (mean 0, scale 1).

    SynthER `diffusion/norm.py` ('standard'); the done dim is always skipped (`disable_terminal_norm`).
    """

    EPS = 1e-5

    def __init__(self, x: np.ndarray, skip_dims: tuple[int, ...] = ()) -> None:
        x = np.asarray(x, np.float64)
        self.mean = x.mean(axis=0).astype(np.float32)
        self.scale = (x.std(axis=0) + self.EPS).astype(np.float32)
        skip = list(skip_dims)
        self.mean[skip], self.scale[skip] = 0.0, 1.0
        self.skip_dims = tuple(int(d) for d in skip_dims)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.mean).astype(np.float32)
