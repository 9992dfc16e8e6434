"""The environment interface every rlrepro agent and run loop sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment, passed to agents and buffers (never written into the config).

    `obs_shape` is what the agent sees (pixels: ``(frame_stack * 3, H, W)`` uint8; states: ``(D,)`` float32).
    `frame_shape` is one time step's share of it, which is what a replay stores: pixels ``(3, H, W)``,
    states ``(D,)``. `max_episode_steps` counts agent steps (one action = `action_repeat` frames).
    """

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    frame_shape: tuple[int, ...]
    frame_stack: int
    action_shape: tuple[int, ...]
    action_repeat: int
    max_episode_steps: int
    pixels: bool


@dataclass
class Step:
    """The result of `reset()` or `step()`.

    `reward` is summed over the action repeat. `terminated` marks a true terminal state (no bootstrap);
    `truncated` marks a time-limit end (bootstrap from `obs`). The episode statistics count agent steps.
    """

    obs: np.ndarray
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    episode_return: float = 0.0
    episode_length: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class Env(Protocol):
    """What `common.envs.make_env` returns, for DeepMind Control and Gymnasium alike.

    Actions are float arrays in [-1, 1] of shape `spec.action_shape`.
    """

    spec: EnvSpec

    def reset(self) -> Step: ...

    def step(self, action: np.ndarray) -> Step: ...

    def get_rng_state(self) -> dict[str, Any]:
        """Everything random about future episodes, so a checkpoint can restore it (JSON/npz-safe)."""
        ...

    def set_rng_state(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class SavesState(Protocol):
    """What an `Env` offers, optionally, for a checkpoint taken mid-episode (see `env_state`).

    `get_state()` returns everything the env's future depends on: the simulator, its RNGs and the episode's
    counters (a dict of tensors, numbers, strings, lists and None: `torch.load(weights_only=True)`-safe), or
    None when it cannot capture them. `set_state(state)` on an env built with the same config and seed makes
    every later `step()` and `reset()` return what the captured env would have.
    """

    def get_state(self) -> dict[str, Any] | None: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


def env_state(env: Env) -> dict[str, Any] | None:
    """`env.get_state()`, or None when the env cannot capture its state (it has no `get_state`)."""
    get_state = getattr(env, "get_state", None)
    return None if get_state is None else get_state()
