"""Act at a slower decision frequency: one decision is a sequence of J actions, each executed for one env
step, in order (Sequence RL's setting: an actor that decides every J steps).

`DecisionInterval(env, J)` is an `Env` whose action is the flat concatenation of J actions (shape
``(J * action_dim,)``); a step runs them one after another, stops early when the episode ends, and returns
the summed reward and the last observation. `info["rewards"]` lists the per-action rewards,
`info["observations"]` the observation after each executed action, and `info["executed"]` how many ran.
Episode counters count decisions.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from common.envs.base import Env, Step
from common.errors import ConfigError


class DecisionInterval:
    """Executes each decision's `interval` actions once each, in order (see the module docstring)."""

    def __init__(self, env: Env, interval: int) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"the decision interval J must be an integer >= 1, got {interval!r}")
        if len(env.spec.action_shape) != 1:
            raise ConfigError(
                f"a decision interval needs flat continuous actions, got {env.spec.action_shape}"
            )
        self._env, self.interval = env, interval
        self.action_dim = env.spec.action_shape[0]
        self.spec = replace(
            env.spec,
            action_shape=(interval * self.action_dim,),
            max_episode_steps=math.ceil(env.spec.max_episode_steps / interval),
        )
        self._return, self._length = 0.0, 0

    def reset(self) -> Step:
        self._return, self._length = 0.0, 0
        return self._env.reset()

    def step(self, action: np.ndarray) -> Step:
        actions = np.asarray(action).reshape(self.interval, self.action_dim)
        rewards: list[float] = []
        observations: list[np.ndarray] = []
        ts: Step | None = None
        for a in actions:
            ts = self._env.step(a)
            rewards.append(ts.reward)
            observations.append(ts.obs)
            if ts.done:
                break
        assert ts is not None  # interval >= 1
        reward = float(sum(rewards))
        self._return += reward
        self._length += 1
        info = {**ts.info, "rewards": rewards, "observations": observations, "executed": len(rewards)}
        return replace(ts, reward=reward, episode_return=self._return, episode_length=self._length, info=info)

    def get_rng_state(self) -> dict[str, Any]:
        return self._env.get_rng_state()

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._env.set_rng_state(state)

    def close(self) -> None:
        self._env.close()
