"""The contract between a paper's agent and the shared run loops."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from common.buffers.base import Batch
from common.envs.base import EnvSpec


class Agent(Protocol):
    """An agent is built by ``AgentClass(cfg.paper.agent, spec, device, precision)``.

    It never writes into its config; shapes come from `spec`. `state_dict()` holds only tensors,
    numbers, strings and (nested) dicts/lists of them, so checkpoints load with ``weights_only=True``.
    """

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None: ...

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One action in [-1, 1] for one observation; `step` counts agent steps (for schedules)."""
        ...

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        """One gradient update; returns scalar metrics to log."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional: `diagnostics() -> dict[str, float]`, merged into every evaluation row when defined.
