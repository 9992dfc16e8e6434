"""The time-in-episode observation feature of stream-x (mohmdelsayed/streaming-drl `time_wrapper.py`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from common.envs.base import Env, EnvSpec, Step, env_state


class TimeFeature:
    """Appends the time-in-episode feature of upstream `time_wrapper.py` (`AddTimeInfo`) to state obs.

    The reset observation and the first step's both carry −0.5; after that it grows by 1/T per step, T the
    episode limit in agent steps (upstream's quirk, kept so the inputs match)."""

    def __init__(self, env: Env) -> None:
        self._env = env
        self._limit = env.spec.max_episode_steps
        self._t = -0.5
        self.spec: EnvSpec = replace(
            env.spec, obs_shape=(env.spec.obs_shape[0] + 1,), frame_shape=(env.spec.obs_shape[0] + 1,)
        )

    def _with_time(self, step: Step) -> Step:
        step.obs = np.append(step.obs, np.float32(self._t)).astype(np.float32)
        return step

    def reset(self) -> Step:
        self._t = -0.5
        return self._with_time(self._env.reset())

    def step(self, action: Any) -> Step:
        step = self._with_time(self._env.step(action))
        self._t += 1.0 / self._limit
        return step

    def get_rng_state(self) -> dict[str, Any]:
        return self._env.get_rng_state()

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._env.set_rng_state(state)

    def get_state(self) -> dict[str, Any] | None:
        inner = env_state(self._env)
        return None if inner is None else {"env": inner, "t": self._t}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env.set_state(state["env"])  # type: ignore[attr-defined]  # get_state returned it
        self._t = float(state["t"])

    def close(self) -> None:
        self._env.close()
