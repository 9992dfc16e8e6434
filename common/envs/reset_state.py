"""Start an episode of a Gymnasium MuJoCo task from a saved simulator state (qpos, qvel): what Snapshot RL
uses to let a student begin where a teacher's trajectory passed.

`snapshot(env)` reads the current joint positions and velocities; `reset_to(env, snap)` starts a new episode
(fresh episode counters and time limit, as `reset()`) and then puts the simulator in `snap`, returning that
state's observation. Both take the `Env` that `common.envs.make_env` builds for `suite: gym` from states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.envs.base import Env, Step
from common.envs.gym_mujoco import GymEnv
from common.errors import EnvError


@dataclass(frozen=True)
class Snapshot:
    """A MuJoCo simulator state: generalised positions and velocities (float64)."""

    qpos: np.ndarray
    qvel: np.ndarray


def _mujoco_env(env: Env) -> tuple[GymEnv, Any]:
    """The `GymEnv` and its Gymnasium MuJoCo env, or a one-line EnvError naming what is supported."""
    if not isinstance(env, GymEnv):
        raise EnvError(
            f"reset-to-state needs a Gymnasium MuJoCo env (env suite gym), got {type(env).__name__}"
        )
    inner = env._env.unwrapped  # the same package's wrapper: its Gymnasium env
    if not hasattr(inner, "set_state") or not hasattr(inner, "data"):
        raise EnvError(f"reset-to-state needs a MuJoCo task; {type(inner).__name__} has no qpos/qvel state")
    if env.spec.pixels:
        raise EnvError("reset-to-state serves state observations (pixels=false)")
    return env, inner


def snapshot(env: Env) -> Snapshot:
    """The simulator state `env` is in now."""
    _, inner = _mujoco_env(env)
    return Snapshot(np.array(inner.data.qpos, np.float64), np.array(inner.data.qvel, np.float64))


def reset_to(env: Env, snap: Snapshot) -> Step:
    """Start a new episode in state `snap`: `env.reset()` (counters, time limit, the reset's RNG draw), then
    set qpos/qvel (`MujocoEnv.set_state`, which also recomputes the derived quantities) and return the
    observation of that state. The episode then runs its full time limit from there."""
    wrapper, inner = _mujoco_env(env)
    if snap.qpos.shape != inner.data.qpos.shape or snap.qvel.shape != inner.data.qvel.shape:
        raise EnvError(
            f"snapshot of shapes qpos {snap.qpos.shape}, qvel {snap.qvel.shape} does not fit this task "
            f"(qpos {inner.data.qpos.shape}, qvel {inner.data.qvel.shape}): it was taken in another env"
        )
    first = wrapper.reset()
    inner.set_state(snap.qpos, snap.qvel)
    first.obs = wrapper._observe(inner._get_obs())  # the same package's wrapper: its observation format
    return first
