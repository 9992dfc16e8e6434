"""The contracts between a paper's agent and the shared run loops (`common.loop`, `common.offline.loop`):
`Agent` learns from a replay (`train_online`), `StreamAgent` from each transition once (`train_stream`),
`OfflineAgent` from a fixed dataset (`train_offline`). All three are a `Policy`: what evaluation and
checkpoints (`common.session`) need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from common.buffers.base import Batch
from common.envs.base import EnvSpec

if TYPE_CHECKING:
    from common.offline.data import OfflineData


class Policy(Protocol):
    """What every loop needs of every agent: actions, and its whole state for checkpoints.

    `state_dict()` holds only tensors, numbers, strings and (nested) dicts/lists of them, so checkpoints
    load with ``weights_only=True``.
    """

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One action for one observation (eval: the deterministic/greedy one); `step` counts agent steps
        (for schedules)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # Optional: `diagnostics() -> dict[str, float]`, merged into every online evaluation row when defined.


class Agent(Policy, Protocol):
    """An agent is built by ``AgentClass(cfg.paper.agent, spec, device, precision)``.

    It never writes into its config; shapes come from `spec`; actions are in [-1, 1].
    """

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None: ...

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        """One gradient update; returns scalar metrics to log."""
        ...


class StreamAgent(Policy, Protocol):
    """Built like an `Agent`; learns from each transition once, without a replay."""

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

    # `state_dict()` also holds traces, optimiser and normaliser statistics.


class OfflineAgent(Agent, Protocol):
    """An `Agent` trained from a fixed dataset by `common.offline.loop.train_offline`.

    Built like an `Agent`, then `prepare(data)` is called once with the whole dataset before any update (also
    before `load_state_dict` on a resume): statistics the algorithm derives from the data (state mean/std,
    reward scale) are computed there and kept in `state_dict()`. `update` receives one-step batches whose
    `discount` is gamma * (1 - terminated).
    """

    def prepare(self, data: OfflineData) -> None:
        """See the whole dataset once (the loop may pass another set than it samples from: SynthER)."""
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
