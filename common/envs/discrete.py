"""Gymnasium tasks with a `Discrete` action space (e.g. classic control `CartPole-v1`) as an `Env`.

`common.envs` is continuous-action only (actions in [-1, 1]); discrete agents get a `DiscreteEnvSpec`:
`action_shape == ()` and `num_actions`, and act with an integer (a 0-d array or a Python int). States only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.envs import as_jsonable
from common.envs.base import EnvSpec, Step
from common.envs.gym_mujoco import GymEpisodeState, model_baseline
from common.errors import CheckpointError, ConfigError, EnvError


@dataclass(frozen=True)
class DiscreteEnvSpec(EnvSpec):
    """An `EnvSpec` whose actions are integers in ``[0, num_actions)``."""

    num_actions: int

    @classmethod
    def of_frames(
        cls,
        shape: tuple[int, ...],
        dtype: type,
        *,
        num_actions: int,
        action_repeat: int,
        max_frames: int,
        pixels: bool = False,
    ) -> DiscreteEnvSpec:
        """The spec of an env whose observation is one frame of `shape` (no stack here: `FrameStack`
        stacks pixels), with episodes of at most `max_frames` frames at `action_repeat` frames per step."""
        return cls(
            obs_shape=shape,
            obs_dtype=np.dtype(dtype),
            frame_shape=shape,
            frame_stack=1,
            action_shape=(),
            action_repeat=action_repeat,
            max_episode_steps=math.ceil(max_frames / action_repeat),
            pixels=pixels,
            num_actions=num_actions,
        )


def make_discrete_env(cfg: Mapping, *, pixels: bool, action_repeat: int, seed: int) -> GymDiscreteEnv:
    """Build the `env` section with `suite: gym_discrete` (keys: `id`, optional `max_episode_frames`)."""
    import gymnasium

    if pixels:
        raise ConfigError(f"env {cfg.get('name')}: suite gym_discrete serves states only; set pixels=false")
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, int) or action_repeat < 1:
        raise ConfigError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")
    env_id = cfg.get("id")
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"env.id must be a non-empty string for suite gym_discrete, got {env_id!r}")
    try:
        limit = gymnasium.spec(env_id).max_episode_steps
    except gymnasium.error.Error as exc:
        raise EnvError(f"unknown Gymnasium env id {env_id!r}: {' '.join(str(exc).split())}") from exc
    max_frames = cfg.get("max_episode_frames")
    if max_frames is not None:
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
            raise ConfigError(f"env.max_episode_frames must be null or an integer >= 1, got {max_frames!r}")
        limit = max_frames  # may exceed the registered limit (stream Q runs CartPole for 10,000 steps)
    if limit is None:
        raise ConfigError(f"Gymnasium env {env_id} has no time limit: set env.max_episode_frames")
    env = gymnasium.make(env_id, max_episode_steps=limit)
    try:
        return GymDiscreteEnv(env, label=env_id, action_repeat=action_repeat, max_frames=limit, seed=seed)
    except BaseException:
        env.close()
        raise


class GymDiscreteEnv(GymEpisodeState):
    """A Gymnasium env with `Discrete` actions and a `Box` observation; same conventions as `GymEnv`."""

    def __init__(self, env: Any, *, label: str, action_repeat: int, max_frames: int, seed: int) -> None:
        from gymnasium import spaces

        if not isinstance(env.action_space, spaces.Discrete):
            raise EnvError(f"Gymnasium env {label} needs a Discrete action space, has {env.action_space}")
        if not isinstance(env.observation_space, spaces.Box):
            raise EnvError(f"Gymnasium env {label} needs a Box observation space")
        self._env = env
        self._repeat = action_repeat
        self._start = int(env.action_space.start)
        self.num_actions = int(env.action_space.n)
        self._pending_seed: int | None = seed  # the first reset seeds, later ones continue the stream
        obs_shape = (math.prod(env.observation_space.shape),)
        self.spec: EnvSpec = DiscreteEnvSpec.of_frames(
            obs_shape,
            np.float32,
            num_actions=int(env.action_space.n),
            action_repeat=action_repeat,
            max_frames=max_frames,
        )
        self._return, self._length, self._needs_reset = 0.0, 0, True
        self._baseline = model_baseline(env)

    def reset(self) -> Step:
        obs, _ = self._env.reset(seed=self._pending_seed)
        self._pending_seed = None
        self._return, self._length, self._needs_reset = 0.0, 0, False
        return Step(obs=np.asarray(obs, np.float32).reshape(-1))

    def step(self, action: Any) -> Step:
        if self._needs_reset:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise EnvError(f"action {a} is outside [0, {self.num_actions})")
        reward = 0.0
        for _ in range(self._repeat):
            obs, r, terminated, truncated, _ = self._env.step(a + self._start)
            reward += float(r)
            if terminated or truncated:
                break
        terminated = bool(terminated)
        truncated = bool(truncated) and not terminated
        self._needs_reset = terminated or truncated
        self._return += reward
        self._length += 1
        obs = np.asarray(obs, np.float32).reshape(-1)
        return Step(obs, reward, terminated, truncated, self._return, self._length)

    def get_rng_state(self) -> dict[str, Any]:
        return {
            "suite": "gym_discrete",
            "pending_seed": self._pending_seed,
            "np_random": as_jsonable(self._env.unwrapped.np_random.bit_generator.state),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            if state["suite"] != "gym_discrete":
                raise ValueError(f"state of suite {state['suite']!r}")
            self._env.unwrapped.np_random.bit_generator.state = state["np_random"]
            self._pending_seed = state["pending_seed"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a gym_discrete env RNG state ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self._env.close()
