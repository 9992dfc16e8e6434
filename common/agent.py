"""The contracts between a paper's agent and the shared run loop (`common/loop.py`):
`Agent` learns from a replay (`train_online`), `StreamAgent` from each transition once (`train_stream`)."""

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


class StreamAgent(Protocol):
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """An action for `obs` (eval: the deterministic/greedy one); `step` counts agent steps."""
        ...

    def learn(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
    ) -> dict[str, float]:
        """One streaming update from one transition (`action` is what `act` returned); scalar metrics."""
        ...

    def end_episode(self) -> None:
        """The episode was cut without a final transition (a resume from a mid-episode checkpoint):
        forget per-episode state (eligibility traces, the reward trace, cached observations)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and strings only (loaded with ``weights_only=True``): weights, traces,
        optimiser and normaliser statistics."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class OfflineAgent(Agent, Protocol):
    """An `Agent` trained from a fixed dataset by `common.offline.loop.train_offline`.

    Built like an `Agent`, then `prepare(data)` is called once with the whole dataset before any update (also
    before `load_state_dict` on a resume): statistics the algorithm derives from the data (state mean/std,
    reward scale) are computed there and kept in `state_dict()`. `update` receives one-step batches whose
    `discount` is gamma * (1 - terminated).
    """

    def prepare(self, data: Any) -> None:
        """`data` is a `common.offline.data.OfflineData`."""
        ...


def check_state_control(owner: str, cfg: DictConfig, keys: tuple[str, ...], spec: EnvSpec) -> None:
    """The checks every state-based continuous-control agent makes first: its `paper.agent` holds `keys`, the
    env takes a flat action vector in [-1, 1], and observations are state vectors. One-line ConfigErrors."""
    from common.errors import ConfigError

    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ConfigError(f"paper.agent is missing {', '.join(missing)} ({owner} needs {', '.join(keys)})")
    discrete = hasattr(spec, "num_actions")
    if len(spec.action_shape) != 1 or discrete:
        raise ConfigError(
            f"{owner} needs continuous actions (a flat vector in [-1, 1]); this env has action_shape "
            f"{spec.action_shape}{' (discrete)' if discrete else ''}"
        )
    if spec.pixels or len(spec.obs_shape) != 1:
        raise ConfigError(
            f"{owner} here learns from state vectors (pixels=false), got obs_shape {spec.obs_shape}"
        )
