"""Stop a run as soon as its numbers stop being numbers.

A learning rate too large for the task turns losses and weights into inf/NaN; left alone, the run would
finish "successfully" with NaN in every row and checkpoint, or crash later inside the physics engine on a NaN
action. `DivergenceWatch` checks what the agent returns, at the moment it returns it: the metrics of every
`update`/`learn` call (losses and friends) and every action of `act`. `first_nonfinite` checks a state
before it is checkpointed, so a non-finite checkpoint is never written and `latest` keeps naming the last
finite one. A check costs a few float comparisons per call; the metrics are floats the loop averages anyway.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

# Agent methods whose results are checked: the metrics of a gradient step (replay, offline, streaming,
# on-policy) and actions (one env's, or a batch of envs' while collecting a rollout).
METRIC_METHODS = ("update", "learn")
ACTION_METHODS = ("act", "explore")


def first_nonfinite(value: Any, path: str = "") -> str | None:
    """The dotted path of the first inf/NaN float in `value` (tensors, arrays, numbers, dicts, lists), or
    None when every float is finite; e.g. ``"critic.q1.0.weight"``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            return None if bool(torch.isfinite(value).all()) else path or "value"
        return None
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.inexact):
            return None if bool(np.isfinite(value).all()) else path or "value"
        return None
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(value) else path or "value"
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = first_nonfinite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def learning_rate_knobs(cfg: DictConfig) -> list[str]:
    """`paper.agent.*` settings named like a learning rate (`lr`, `actor_lr`, ...), as ``key=value``: the
    knobs a divergence most likely points at."""
    found: list[str] = []

    def walk(node: Mapping[Any, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}.{key}")
            elif key == "lr" or str(key).endswith("_lr"):
                shown = f"{value:g}" if isinstance(value, float) else value
                found.append(f"{prefix}.{key}={shown}")

    node = OmegaConf.select(cfg, "paper.agent", default=None)
    agent = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None
    if isinstance(agent, Mapping):
        walk(agent, "paper.agent")
    return found


class DivergenceWatch:
    """Checks every metrics dict `agent.update`/`agent.learn` returns and every action `agent.act` (and
    `agent.explore`, when it has one) returns; the first non-finite one calls `diverged(what)`, which must
    raise.

    The checks wrap the agent's own bound methods on the instance, so every caller (the loop, a learning
    strategy, an evaluation) goes through them without knowing; the agent's class is untouched.
    """

    def __init__(self, agent: Any, diverged: Callable[[str], None]) -> None:
        self.diverged = diverged
        for names, check in ((METRIC_METHODS, self._metrics_checked), (ACTION_METHODS, self._action_checked)):
            for name in names:
                method = getattr(agent, name, None)
                if callable(method):
                    setattr(agent, name, check(method))

    def _metrics_checked(self, method: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
        @functools.wraps(method)
        def checked(*args: Any, **kwargs: Any) -> dict[str, float]:
            metrics = method(*args, **kwargs)
            for key, value in metrics.items():
                if not math.isfinite(float(value)):
                    self.diverged(f"{method.__name__}() returned {key}={float(value)}")
            return metrics

        return checked

    def _action_checked(self, act: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        @functools.wraps(act)
        def checked(*args: Any, **kwargs: Any) -> np.ndarray:
            action = act(*args, **kwargs)
            if not np.isfinite(np.asarray(action, dtype=np.float64)).all():
                self.diverged(f"{act.__name__}() returned a non-finite action")
            return action

        return checked
