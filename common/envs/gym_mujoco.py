"""Gymnasium MuJoCo tasks (e.g. Hopper-v5) as an rlrepro `Env`, with the same conventions as `dmc.py`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from common.envs import action_affine, apply_fast_render, as_jsonable, mujoco_state, resolve_camera
from common.envs.base import EnvSpec, Step
from common.envs.gl import gl_error
from common.errors import CheckpointError, ConfigError, EnvError


def make_gym(
    env_id: str,
    *,
    pixels: bool,
    action_repeat: int,
    image_size: int,
    camera: int | str | None,
    max_episode_frames: int | None,
    fast_render: bool,
    seed: int,
) -> GymEnv:
    """`gymnasium.make(env_id)` (pixels: `render_mode="rgb_array"` at `image_size`) and wrap it.

    `camera=None` keeps Gymnasium's default view; an index or name selects a fixed camera of the model.
    """
    try:
        import gymnasium
    except ModuleNotFoundError as exc:
        raise EnvError("gymnasium is not installed: pip install 'gymnasium[mujoco]'") from exc
    try:  # imports the GL backend named by MUJOCO_GL (e.g. osmesa without libosmesa6 fails here)
        import gymnasium.envs.mujoco.mujoco_rendering  # noqa: F401
    except ModuleNotFoundError as exc:
        raise EnvError(
            f"cannot import Gymnasium's MuJoCo envs ({exc}): pip install 'gymnasium[mujoco]'"
        ) from exc
    except Exception as exc:
        raise gl_error(exc, "import Gymnasium's MuJoCo renderer") from exc
    try:
        limit = gymnasium.spec(env_id).max_episode_steps
    except gymnasium.error.Error as exc:
        raise EnvError(f"unknown Gymnasium env id {env_id!r}: {' '.join(str(exc).split())}") from exc
    if max_episode_frames is not None:
        limit = max_episode_frames if limit is None else min(limit, max_episode_frames)
    if limit is None:
        raise ConfigError(f"Gymnasium env {env_id} has no time limit: set env.max_episode_frames")
    kwargs: dict[str, Any] = {}
    if pixels:
        kwargs.update(render_mode="rgb_array", width=image_size, height=image_size)
        if camera is not None:
            kwargs["camera_name" if isinstance(camera, str) else "camera_id"] = camera
    try:
        env = gymnasium.make(env_id, max_episode_steps=limit, **kwargs)
    except (gymnasium.error.Error, TypeError) as exc:
        raise EnvError(f"cannot make Gymnasium env {env_id!r}: {' '.join(str(exc).split())}") from exc
    try:
        return GymEnv(
            env,
            label=env_id,
            pixels=pixels,
            action_repeat=action_repeat,
            image_size=image_size,
            camera=camera,
            max_episode_frames=limit,
            fast_render=fast_render,
            seed=seed,
        )
    except BaseException:
        env.close()
        raise


class GymEpisodeState:
    """`get_state`/`set_state` of a Gymnasium env adapter (`GymEnv`, `GymDiscreteEnv`): the simulator
    (`capture_gym`), the RNG and the episode's running statistics, for an exact mid-episode resume."""

    _env: Any
    _baseline: dict[str, np.ndarray] | None
    _return: float
    _length: int
    _needs_reset: bool
    get_rng_state: Callable[[], dict[str, Any]]
    set_rng_state: Callable[[dict[str, Any]], None]

    def get_state(self) -> dict[str, Any] | None:
        sim = capture_gym(self._env, self._baseline)
        if sim is None:
            return None
        episode = {"return": self._return, "length": self._length, "needs_reset": self._needs_reset}
        return {**self.get_rng_state(), "sim": sim, "episode": episode}

    def set_state(self, state: dict[str, Any]) -> None:
        restore_gym(self._env, self._baseline, state["sim"])
        self.set_rng_state(state)
        episode = state["episode"]
        self._return, self._length = float(episode["return"]), int(episode["length"])
        self._needs_reset = bool(episode["needs_reset"])


class GymEnv(GymEpisodeState):
    """A Gymnasium env with a Box action space behind the `Env` protocol (pixels without frame stacking).

    The time limit is Gymnasium's `TimeLimit`, set to `max_episode_frames` env steps by `make_gym`.
    """

    def __init__(
        self,
        env: Any,
        *,
        label: str,
        pixels: bool,
        action_repeat: int,
        image_size: int,
        camera: int | str | None,
        max_episode_frames: int,
        fast_render: bool,
        seed: int,
    ) -> None:
        from gymnasium import spaces

        if not isinstance(env.action_space, spaces.Box):
            raise EnvError(f"Gymnasium env {label} needs a Box action space, has {env.action_space}")
        self._env = env
        self._repeat = action_repeat
        self._affine = action_affine(env.action_space.low, env.action_space.high)
        self._low = np.full(env.action_space.shape, -1.0, np.float32)
        self._high = np.full(env.action_space.shape, 1.0, np.float32)
        self._pending_seed: int | None = seed  # the first reset seeds, later ones continue the stream

        if pixels:
            model = getattr(env.unwrapped, "model", None)
            if model is not None:
                if camera is not None:
                    resolve_camera(model, camera, f"Gymnasium {label}")
                if fast_render:
                    apply_fast_render(model, image_size)
            try:
                env.unwrapped.render()  # fail now, not at the first reset, when no GL backend loads
            except Exception as exc:
                raise gl_error(exc, f"render Gymnasium {label}") from exc
            obs_shape: tuple[int, ...] = (3, image_size, image_size)
            obs_dtype: np.dtype = np.dtype(np.uint8)
        else:
            if not isinstance(env.observation_space, spaces.Box):
                raise EnvError(f"Gymnasium env {label} needs a Box observation space for states")
            obs_shape = (math.prod(env.observation_space.shape),)
            obs_dtype = np.dtype(np.float32)
        self._pixels = pixels
        self.spec = EnvSpec(
            obs_shape=obs_shape,
            obs_dtype=obs_dtype,
            frame_shape=obs_shape,
            frame_stack=1,
            action_shape=tuple(env.action_space.shape),
            action_repeat=action_repeat,
            max_episode_steps=math.ceil(max_episode_frames / action_repeat),
            pixels=pixels,
        )
        self._return = 0.0
        self._length = 0
        self._needs_reset = True
        self._baseline = model_baseline(env)

    def _observe(self, obs: Any) -> np.ndarray:
        if self._pixels:
            return np.ascontiguousarray(self._env.render().transpose(2, 0, 1))
        return np.asarray(obs, dtype=np.float32).reshape(-1)

    def reset(self) -> Step:
        obs, _ = self._env.reset(seed=self._pending_seed)
        self._pending_seed = None
        self._return = 0.0
        self._length = 0
        self._needs_reset = False
        return Step(obs=self._observe(obs))

    def step(self, action: np.ndarray) -> Step:
        if self._needs_reset:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        action = np.minimum(np.maximum(action, self._low), self._high)  # bound arrays: the fastest clip
        if self._affine is not None:
            action = action * self._affine[0] + self._affine[1]
        action = action.astype(np.float32, copy=False)
        env_step = self._env.step
        reward = 0.0
        for _ in range(self._repeat):
            obs, r, terminated, truncated, _ = env_step(action)
            reward += r
            if terminated or truncated:
                break
        terminated = bool(terminated)
        truncated = bool(truncated) and not terminated
        self._needs_reset = terminated or truncated
        reward = float(reward)
        self._return += reward
        self._length += 1
        return Step(self._observe(obs), reward, terminated, truncated, self._return, self._length)

    def get_rng_state(self) -> dict[str, Any]:
        # PCG64's state holds 128-bit ints: Python's json round-trips them exactly.
        return {
            "suite": "gym",
            "pending_seed": self._pending_seed,
            "np_random": as_jsonable(self._env.unwrapped.np_random.bit_generator.state),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            if state["suite"] != "gym":
                raise ValueError(f"state of suite {state['suite']!r}")
            self._env.unwrapped.np_random.bit_generator.state = state["np_random"]
            self._pending_seed = state["pending_seed"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a Gymnasium env RNG state ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self._env.close()


# ---- the simulator state of a Gymnasium env (also used by `common.envs.discrete`) ----

_CLASSIC_FIELDS = ("state", "steps_beyond_terminated", "last_u")  # what classic-control envs carry over


def model_baseline(env: Any) -> dict[str, np.ndarray] | None:
    """The MuJoCo model's arrays at construction (see `mujoco_state`), or None for other envs."""
    model = getattr(env.unwrapped, "model", None)
    return None if model is None else mujoco_state.model_arrays(model)


def _time_limit(env: Any) -> Any:
    from gymnasium.wrappers import TimeLimit

    while not isinstance(env, TimeLimit):
        if not hasattr(env, "env"):
            return None
        env = env.env
    return env


def capture_gym(env: Any, baseline: dict[str, np.ndarray] | None) -> dict[str, Any] | None:
    """The simulator (MuJoCo data, or a classic-control env's fields) and the time-limit counter of a
    Gymnasium env built by `gymnasium.make`; None for any other kind of env (it cannot be captured)."""
    inner, limit = env.unwrapped, _time_limit(env)
    elapsed = None if limit is None else limit._elapsed_steps
    if baseline is not None:
        return {"elapsed": elapsed, "mujoco": mujoco_state.capture(inner.model, inner.data, baseline)}
    if type(inner).__module__.startswith("gymnasium.envs.classic_control"):
        fields = {k: _tensor_or_value(getattr(inner, k)) for k in _CLASSIC_FIELDS if hasattr(inner, k)}
        return {"elapsed": elapsed, "classic": fields}
    return None


def restore_gym(env: Any, baseline: dict[str, np.ndarray] | None, saved: dict[str, Any]) -> None:
    """Reset `env` (its wrappers then accept `step`), then overwrite what `capture_gym` saved. The caller
    restores the RNG afterwards (the reset drew from it)."""
    try:
        env.reset()
        inner, limit = env.unwrapped, _time_limit(env)
        if limit is not None:
            limit._elapsed_steps = saved["elapsed"]
        if "mujoco" in saved:
            if baseline is None:
                raise ValueError("a MuJoCo state for an env without a MuJoCo model")
            mujoco_state.restore(inner.model, inner.data, baseline, saved["mujoco"])
        else:
            for key, value in saved["classic"].items():
                setattr(inner, key, _from_saved(value))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"not a Gymnasium env state ({type(exc).__name__}: {exc})") from exc


def _tensor_or_value(value: Any) -> Any:
    """Numpy arrays and scalars as tensors (tagged, to come back as what they were); other values as is."""
    if isinstance(value, np.ndarray):
        return {"array": torch.from_numpy(value.copy())}
    if isinstance(value, np.generic):
        return {"scalar": torch.from_numpy(np.asarray(value))}
    return value


def _from_saved(value: Any) -> Any:
    if isinstance(value, dict) and "array" in value:
        return value["array"].numpy().copy()
    if isinstance(value, dict) and "scalar" in value:
        return value["scalar"].numpy()[()]
    return value
