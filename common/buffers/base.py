"""What a replay buffer hands to an agent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    """A sampled minibatch of n-step transitions (numpy, host memory).

    `reward` is the discounted n-step return sum_{i<m} gamma^i r_{t+i} and `discount` is gamma^m for the
    m <= n steps actually taken (m < n when the episode ended first), or 0 when a true terminal was reached.
    The bootstrap target is therefore ``reward + discount * V(next_obs)``.
    """

    obs: np.ndarray  # (B, *obs_shape)
    action: np.ndarray  # (B, *action_shape) float32
    reward: np.ndarray  # (B, 1) float32
    discount: np.ndarray  # (B, 1) float32
    next_obs: np.ndarray  # (B, *obs_shape)

    def to_torch(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Tensors on `device`; pixel observations stay uint8 (the encoder scales them)."""
        pin = device.type == "cuda"

        def move(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(x)
            return t.pin_memory().to(device, non_blocking=True) if pin else t

        return {k: move(getattr(self, k)) for k in ("obs", "action", "reward", "discount", "next_obs")}
