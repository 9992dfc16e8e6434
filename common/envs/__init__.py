"""`make_env`: DeepMind Control and Gymnasium MuJoCo tasks behind one `Env` interface.

The suites are imported lazily inside `make_env`, after `ensure_headless_gl` has chosen a GL backend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from common.envs.gl import ensure_headless_gl

ensure_headless_gl()  # before anything imports mujoco, dm_control or gymnasium's MuJoCo envs

from common.envs.base import Env, EnvSpec, Step, env_state  # noqa: E402
from common.errors import ConfigError, EnvError  # noqa: E402

if TYPE_CHECKING:
    import mujoco

__all__ = ["Env", "EnvSpec", "FrameStack", "Step", "check_env_config", "make_env"]


def make_env(
    cfg: Mapping,
    *,
    pixels: bool,
    action_repeat: int,
    frame_stack: int,
    image_size: int,
    seed: int,
    evaluation: bool = False,
) -> Env:
    """Build the environment described by the `env` config section (read, never written).

    `evaluation=True` builds the evaluation env: suites with training-only preprocessing (Atari: a lost life
    ends the episode, clipped rewards) leave it out there.

    Keys: `suite` ("dmc" | "gym" | "gym_discrete" | "minatar" | "atari" | "minigrid"), `name`; dmc: `domain`,
    `task`; gym: `id`; minatar: `game` (common/envs/minatar.py); atari: `game` (common/envs/atari.py);
    minigrid: `id` (common/envs/minigrid.py); `camera`
    (index or name; null = the suite's default view), `max_episode_frames` (null = the task's own limit),
    `fast_render` (tests only: cheaper rendering that changes the pixels).
    `context` / `multi_context` (gym and gym_discrete tasks): a contextual task, common/envs/context.py.
    """
    suite = cfg.get("suite")
    if cfg.get("context") is not None or cfg.get("multi_context") is not None:  # common/envs/context.py
        from common.envs.context import make_context_env

        return make_context_env(
            cfg,
            pixels=pixels,
            action_repeat=action_repeat,
            frame_stack=frame_stack,
            image_size=image_size,
            seed=seed,
            evaluation=evaluation,
        )
    where = f" (env {cfg.get('name')})" if cfg.get("name") else ""
    for key, value, low in (("action_repeat", action_repeat, 1), ("frame_stack", frame_stack, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    if pixels and (not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    if not pixels and frame_stack != 1:
        raise ConfigError(f"frame_stack must be 1 for state observations, got {frame_stack}{where}")
    max_frames = cfg.get("max_episode_frames")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ConfigError(f"env.max_episode_frames must be null or an integer >= 1, got {max_frames!r}")
    camera = cfg.get("camera")
    if camera is not None and (isinstance(camera, bool) or not isinstance(camera, (int, str))):
        raise ConfigError(f"env.camera must be an integer, a camera name or null, got {camera!r}")
    common: dict[str, Any] = dict(
        pixels=pixels,
        action_repeat=action_repeat,
        image_size=image_size,
        camera=camera,
        max_episode_frames=max_frames,
        fast_render=bool(cfg.get("fast_render", False)),
        seed=seed,
    )

    env: Env
    if suite == "dmc":
        from common.envs.dmc import make_dmc

        env = make_dmc(_required(cfg, "domain"), _required(cfg, "task"), **common)
    elif suite == "gym":
        from common.envs.gym_mujoco import make_gym

        env = make_gym(_required(cfg, "id"), **common)
    elif suite == "gym_sparse":
        from common.envs.sparse import make_sparse

        env = make_sparse(_required(cfg, "id"), **common)
    elif suite == "gym_discrete":
        from common.envs.discrete import make_discrete_env

        return make_discrete_env(cfg, pixels=pixels, action_repeat=action_repeat, seed=seed)
    elif suite == "minatar":
        from common.envs.minatar import make_minatar

        return make_minatar(cfg, pixels=pixels, action_repeat=action_repeat, seed=seed)
    elif suite == "atari":
        from common.envs.atari import make_atari

        env = make_atari(
            cfg,
            pixels=pixels,
            action_repeat=action_repeat,
            image_size=image_size,
            seed=seed,
            evaluation=evaluation,
        )
    elif suite == "minigrid":
        from common.envs.minigrid import make_minigrid

        return make_minigrid(cfg, pixels=pixels, action_repeat=action_repeat, seed=seed)
    else:
        raise ConfigError(
            "env.suite must be 'dmc', 'gym', 'gym_sparse', 'gym_discrete', 'minatar', 'atari' or 'minigrid', "
            f"got {suite!r}{where}"
        )
    if pixels and frame_stack > 1:
        env = FrameStack(env, frame_stack)
    return env


def check_env_config(cfg: Mapping, *, pixels: bool, action_repeat: int, image_size: int) -> None:
    """The suite-specific checks of `make_env` (unknown game or id, pixels where a suite has none), without
    building anything: a run calls this before it writes its directory."""
    suite = cfg.get("suite")
    if cfg.get("context") is not None or cfg.get("multi_context") is not None:
        from common.envs.context import check_context_config

        check_context_config(cfg, pixels=pixels)
    if suite == "atari":
        from common.envs.atari import check_atari_config

        check_atari_config(cfg, pixels=pixels, action_repeat=action_repeat, image_size=image_size)
    elif suite == "minigrid":
        from common.envs.minigrid import check_minigrid_config

        check_minigrid_config(cfg, pixels=pixels, action_repeat=action_repeat)
    elif suite == "gym_sparse":
        from common.envs.sparse import SPARSE_TASKS

        if cfg.get("id") not in SPARSE_TASKS:
            tasks = ", ".join(SPARSE_TASKS)
            raise ConfigError(f"env {cfg.get('id')} has no sparse-reward variant; MEX has {tasks}")
        if pixels:
            raise ConfigError(f"the sparse-reward {cfg.get('id')} serves states only; set pixels=false")
    elif suite == "minatar":
        from common.envs.minatar import check_minatar_config

        check_minatar_config(cfg, pixels=pixels, action_repeat=action_repeat)


def _required(cfg: Mapping, key: str) -> str:
    value = cfg.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"env.{key} must be a non-empty string for suite {cfg.get('suite')!r}, got {value!r}"
        )
    return value


class FrameStack:
    """Stacks the last `k` pixel frames on the channel axis; a reset fills the stack with the first frame."""

    def __init__(self, env: Env, k: int) -> None:
        self._env = env
        self._frames: deque[np.ndarray] = deque(maxlen=k)
        c, h, w = env.spec.frame_shape
        self.spec = replace(env.spec, obs_shape=(k * c, h, w), frame_stack=k)

    def reset(self) -> Step:
        step = self._env.reset()
        for _ in range(self._frames.maxlen or 0):
            self._frames.append(step.obs)
        step.obs = np.concatenate(self._frames, axis=0)
        return step

    def step(self, action: np.ndarray) -> Step:
        step = self._env.step(action)
        self._frames.append(step.obs)
        step.obs = np.concatenate(self._frames, axis=0)
        return step

    def get_rng_state(self) -> dict[str, Any]:
        return self._env.get_rng_state()

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._env.set_rng_state(state)

    def get_state(self) -> dict[str, Any] | None:
        inner = env_state(self._env)
        if inner is None:
            return None
        return {"env": inner, "frames": torch.from_numpy(np.stack(self._frames))}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env.set_state(state["env"])  # type: ignore[attr-defined]  # get_state returned it
        self._frames.clear()
        self._frames.extend(state["frames"].numpy())

    def close(self) -> None:
        self._env.close()


# ---- helpers shared by the suite modules ----


def action_affine(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`(scale, offset)` mapping [-1, 1] onto [low, high], or None when the bounds already are [-1, 1]."""
    low, high = np.asarray(low), np.asarray(high)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise EnvError(f"action bounds must be finite to rescale from [-1, 1], got low={low} high={high}")
    if np.all(low == -1.0) and np.all(high == 1.0):
        return None
    return (high - low) / 2.0, (high + low) / 2.0


def resolve_camera(model: mujoco.MjModel, camera: int | str, where: str) -> int:
    """The fixed-camera index for `camera` (index, or name; -1 = free camera), else an `EnvError`."""
    import mujoco

    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) or "" for i in range(model.ncam)]
    if isinstance(camera, str) and camera in names:
        return names.index(camera)
    if isinstance(camera, int) and -1 <= camera < model.ncam:
        return camera
    valid = ", ".join(f"{i} ({n!r})" if n else str(i) for i, n in enumerate(names))
    raise EnvError(
        f"unknown camera {camera!r} for {where}; valid cameras: {valid or 'none'}, or -1 (free camera)"
    )


def apply_fast_render(model: mujoco.MjModel, image_size: int) -> None:
    """Cheaper rendering for tests (no MSAA, small shadow map, no shadows or reflections). Changes pixels."""
    model.vis.quality.offsamples = 0
    model.vis.quality.shadowsize = 512
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0
    model.vis.global_.offwidth = image_size
    model.vis.global_.offheight = image_size


def as_jsonable(value: Any) -> Any:
    """Numpy arrays and scalars (also inside tuples, lists, dicts) as plain lists, ints, floats."""
    if isinstance(value, dict):
        return {str(k): as_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value
