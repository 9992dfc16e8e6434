"""DeepMind Control Suite tasks as an rlrepro `Env`: DrQ-v2's wrapper stack folded into one class.

DrQ-v2 (drqv2/dmc.py) chains ActionDTypeWrapper -> ActionRepeatWrapper -> action scaling -> pixels.Wrapper ->
FrameStackWrapper -> ExtendedTimeStepWrapper. Here one class clips and scales the action, repeats it and
builds the observation (frame stacking is `common.envs.FrameStack`); frames inside an action repeat skip
dm_control's observation, which would be thrown away (see the DEVIATION in `DMCEnv.step`).
"""

from __future__ import annotations

import math
from typing import Any

import dm_env
import numpy as np

from common.envs import action_affine, apply_fast_render, as_jsonable, mujoco_state, resolve_camera
from common.envs.base import EnvSpec, Step
from common.envs.gl import gl_error
from common.errors import CheckpointError, ConfigError, EnvError

_LAST = dm_env.StepType.LAST


def make_dmc(
    domain: str,
    task: str,
    *,
    pixels: bool,
    action_repeat: int,
    image_size: int,
    camera: int | str | None,
    max_episode_frames: int | None,
    fast_render: bool,
    seed: int,
) -> DMCEnv:
    """Load `domain`/`task` with `task_kwargs={"random": seed}` and wrap it."""
    try:
        from dm_control import suite
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("dm_control"):
            raise EnvError("dm_control is not installed: pip install dm-control") from exc
        raise gl_error(exc, "import dm_control (it loads its GL backend)") from exc
    except Exception as exc:  # dm_control imports its GL backend at import time (e.g. osmesa missing)
        raise gl_error(exc, "import dm_control (it loads its GL backend)") from exc
    if domain not in suite.TASKS_BY_DOMAIN:
        raise EnvError(
            f"unknown DMC domain {domain!r}; valid domains: {', '.join(sorted(suite.TASKS_BY_DOMAIN))}"
        )
    tasks = suite.TASKS_BY_DOMAIN[domain]
    if task not in tasks:
        raise EnvError(
            f"unknown DMC task {task!r} for domain {domain!r}; valid tasks: {', '.join(sorted(tasks))}"
        )
    env = suite.load(domain, task, task_kwargs={"random": seed})
    return DMCEnv(
        env,
        label=f"{domain}_{task}",
        pixels=pixels,
        action_repeat=action_repeat,
        image_size=image_size,
        camera=0 if camera is None else camera,
        max_episode_frames=max_episode_frames,
        fast_render=fast_render,
    )


class DMCEnv:
    """A dm_control `control.Environment` behind the `Env` protocol (pixels without frame stacking)."""

    def __init__(
        self,
        env: Any,
        *,
        label: str,
        pixels: bool,
        action_repeat: int,
        image_size: int,
        camera: int | str,
        max_episode_frames: int | None,
        fast_render: bool,
    ) -> None:
        self._env = env
        self._repeat = action_repeat
        action_spec = env.action_spec()
        self._affine = action_affine(action_spec.minimum, action_spec.maximum)
        self._low = np.full(action_spec.shape, -1.0, np.float32)
        self._high = np.full(action_spec.shape, 1.0, np.float32)

        # dm_control keeps the task's time limit only in this private attribute (frames; inf = none).
        # The env ends an episode once its frame count reaches the limit, hence ceil.
        limits = [n for n in (env._step_limit, max_episode_frames) if n is not None and n != math.inf]
        if not limits:
            raise ConfigError(f"DMC task {label} has no time limit: set env.max_episode_frames")
        self._max_frames: int = math.ceil(min(limits))

        self._camera: Any = None
        if pixels:
            obs_shape: tuple[int, ...] = (3, image_size, image_size)
            obs_dtype: np.dtype = np.dtype(np.uint8)
            self._observe = self._render
            self._init_camera(label, camera, image_size, fast_render)
        else:
            self._keys: list[tuple[str, slice, bool]] = []  # (key, slice of the vector, needs ravel)
            start = 0
            for key, array_spec in env.observation_spec().items():
                size = math.prod(array_spec.shape)
                self._keys.append((key, slice(start, start + size), len(array_spec.shape) > 1))
                start += size
            self._obs_dim = start
            obs_shape, obs_dtype = (start,), np.dtype(np.float32)
            self._observe = self._flatten

        self.spec = EnvSpec(
            obs_shape=obs_shape,
            obs_dtype=obs_dtype,
            frame_shape=obs_shape,
            frame_stack=1,
            action_shape=tuple(action_spec.shape),
            action_repeat=action_repeat,
            max_episode_steps=math.ceil(self._max_frames / action_repeat),
            pixels=pixels,
        )
        self._frames = 0
        self._return = 0.0
        self._length = 0
        self._needs_reset = True
        from dm_control.rl import control

        # Observation-free inner frames need these internals of control.Environment (dm_control 1.0.x);
        # any other env type takes env.step for every frame.
        self._skip_obs = (
            type(env) is control.Environment
            and all(
                hasattr(env, name)
                for name in ("_task", "_physics", "_n_sub_steps", "_step_count", "_reset_next_step")
            )
            and not getattr(env, "_flat_observation", True)
        )
        self._task, self._physics = env.task, env.physics
        self._n_sub_steps = getattr(env, "_n_sub_steps", 1)
        self._baseline = mujoco_state.model_arrays(env.physics.model.ptr)

    def _init_camera(self, label: str, camera: int | str, image_size: int, fast_render: bool) -> None:
        from dm_control.mujoco.engine import Camera

        physics = self._env.physics
        model = physics.model.ptr
        camera_id = resolve_camera(model, camera, f"DMC {label}")
        if fast_render:
            apply_fast_render(model, image_size)
        else:  # only grow the offscreen buffer when the image needs it
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, image_size)
            model.vis.global_.offheight = max(model.vis.global_.offheight, image_size)
        try:
            # One Camera for the env's life: physics.render() would build (and free) a scene every frame.
            self._camera = Camera(physics, height=image_size, width=image_size, camera_id=camera_id)
            self._camera.render()
        except Exception as exc:
            raise gl_error(exc, f"render DMC {label}") from exc

    def _render(self, observation: Any) -> np.ndarray:
        return np.ascontiguousarray(self._camera.render().transpose(2, 0, 1))

    def _flatten(self, observation: Any) -> np.ndarray:
        out = np.empty(self._obs_dim, np.float32)
        for key, where, ravel in self._keys:
            out[where] = observation[key].reshape(-1) if ravel else observation[key]
        return out

    def reset(self) -> Step:
        time_step = self._env.reset()
        self._frames = 0
        self._return = 0.0
        self._length = 0
        self._needs_reset = False
        return Step(obs=self._observe(time_step.observation))

    def step(self, action: np.ndarray) -> Step:
        if self._needs_reset:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        action = np.minimum(np.maximum(action, self._low), self._high)  # bound arrays: the fastest clip
        if self._affine is not None:
            action = action * self._affine[0] + self._affine[1]
        env = self._env
        frames = self._frames
        end = min(frames + self._repeat, self._max_frames)  # frame count after this step, unless it ends
        reward = 0.0
        if self._skip_obs:
            # DEVIATION (speed, same results): all frames but the last run control.Environment.step's calls
            # minus get_observation, whose result DrQ-v2's ActionRepeatWrapper discards. The time limit
            # cannot fall on these frames (frames + 1 < end <= the env's step limit); a termination can.
            task, physics, n_sub_steps = self._task, self._physics, self._n_sub_steps
            while frames + 1 < end:
                task.before_step(action, physics)
                physics.step(n_sub_steps)
                task.after_step(physics)
                reward += task.get_reward(physics)
                env._step_count += 1
                frames += 1
                discount = task.get_termination(physics)
                if discount is not None:
                    env._reset_next_step = True
                    return self._end_step(
                        task.get_observation(physics), reward, frames, True, discount == 0.0
                    )
        while frames < end:
            time_step = env.step(action)
            reward += time_step.reward
            frames += 1
            if time_step.step_type is _LAST:
                return self._end_step(time_step.observation, reward, frames, True, time_step.discount == 0.0)
        return self._end_step(time_step.observation, reward, frames, False, False)

    def _end_step(self, observation: Any, reward: float, frames: int, last: bool, terminated: bool) -> Step:
        self._frames = frames
        truncated = not terminated and (last or frames >= self._max_frames)
        self._needs_reset = terminated or truncated
        reward = float(reward)
        self._return += reward
        self._length += 1
        return Step(self._observe(observation), reward, terminated, truncated, self._return, self._length)

    def get_rng_state(self) -> dict[str, Any]:
        return {"suite": "dmc", "task_random": as_jsonable(self._env.task.random.get_state())}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            if state["suite"] != "dmc":
                raise ValueError(f"state of suite {state['suite']!r}")
            kind, keys, pos, has_gauss, gauss = state["task_random"]
            self._env.task.random.set_state(
                (kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a DMC env RNG state ({type(exc).__name__}: {exc})") from exc

    def get_state(self) -> dict[str, Any] | None:
        """The physics (see `mujoco_state`), the task's RNG and the episode's counters; None for an env that
        is not a plain `control.Environment` (its step counter cannot be read)."""
        env = self._env
        if not self._skip_obs:
            return None
        physics = env.physics
        return {
            **self.get_rng_state(),
            "physics": mujoco_state.capture(physics.model.ptr, physics.data.ptr, self._baseline),
            "control": {"step_count": env._step_count, "reset_next_step": env._reset_next_step},
            "episode": {
                "frames": self._frames,
                "return": self._return,
                "length": self._length,
                "needs_reset": self._needs_reset,
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        env = self._env
        try:
            # A reset first (the task builds its per-episode Python state), then everything it drew or set
            # is overwritten with the captured values.
            env.reset()
            physics = env.physics
            mujoco_state.restore(physics.model.ptr, physics.data.ptr, self._baseline, state["physics"])
            env._step_count = int(state["control"]["step_count"])
            env._reset_next_step = bool(state["control"]["reset_next_step"])
            episode = state["episode"]
            self._frames, self._return = int(episode["frames"]), float(episode["return"])
            self._length, self._needs_reset = int(episode["length"]), bool(episode["needs_reset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a DMC env state ({type(exc).__name__}: {exc})") from exc
        self.set_rng_state(state)

    def close(self) -> None:
        if self._camera is not None:
            self._camera._scene.free()  # as dm_control's Physics.render does after each frame
            self._camera = None
        self._env.close()
        # Free the GL context now: left to dm_control's atexit hook, it fails (EGL_BAD_DISPLAY) when
        # mujoco.egl (Gymnasium's renderer) has terminated the shared EGL display first.
        self._env.physics.free()
