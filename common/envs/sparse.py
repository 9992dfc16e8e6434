"""The sparse-reward MuJoCo tasks of MEX (Liu et al., 2023, "Maximize to Explore"): reach a target forward
velocity, rewarded only inside a radius around it.

Definitions from agentification/MEX @36e063c `MEX_MF/envs/hopper_vel.py` (`hopper-vel-sparse`),
`half_cheetah_vel.py` (`cheetah-vel-sparse`) and `walker_vel.py` (`walker-vel-sparse`), the tasks of
`MEX_MF/run_experiments.sh`. Per step, with v = (x_after − x_before) / dt the torso's forward velocity:

    f = −|v − v_goal|;   sparse(f) = (−2 if f < −radius else f) + 2;   r = sparse(f) − c · Σ a²

so r is 2 − |v − v_goal| − c‖a‖² inside the radius and −c‖a‖² outside. The tasks never terminate (MEX's
`done = False`): Hopper and Walker2d do not stop when they fall; episodes end at the 1000-step horizon
(MEX's `HorizonWrapper`). `a` is the action in the task's units (MEX rescales [−1, 1] to the box first).

| task | v_goal | radius | c |
|---|---|---|---|
| Hopper | 1.5 | 0.6 | 0.05 (0.5 · 1e-1) |
| HalfCheetah | 1.5 | 0.6 | 0.05 |
| Walker2d | 1.0 | 0.5 | 1e-3 |
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from common.envs.base import Env, Step
from common.envs.gym_mujoco import GymEnv
from common.errors import ConfigError, EnvError


@dataclass(frozen=True)
class SparseTask:
    goal_velocity: float
    goal_radius: float
    ctrl_cost: float


# keyed by the Gymnasium id our dense env files use (conf/env/<task>.yaml)
SPARSE_TASKS: dict[str, SparseTask] = {
    "Hopper-v5": SparseTask(1.5, 0.6, 0.05),  # hopper_vel.py HopperEnv_sparse
    "HalfCheetah-v5": SparseTask(1.5, 0.6, 0.05),  # half_cheetah_vel.py HalfCheetahVelEnv_sparse
    "Walker2d-v5": SparseTask(1.0, 0.5, 1e-3),  # walker_vel.py WalkerEnv_sparse (sample_tasks: 1.0)
}


def sparse_reward(forward_velocity: float, action: np.ndarray, task: SparseTask) -> float:
    """MEX's `sparsify_rewards(−|v − v_goal|) − c Σ a²` for one step."""
    forward = -abs(forward_velocity - task.goal_velocity)
    sparse = (-2.0 if forward < -task.goal_radius else forward) + 2.0
    return float(sparse - task.ctrl_cost * np.sum(np.square(action)))


class SparseVelocity:
    """Replaces the reward of a Gymnasium MuJoCo `Env` (suite gym, states, action repeat 1) with its MEX
    sparse-velocity reward and turns off its unhealthy-state termination. `episode_return` counts the new
    reward; the dense reward stays available as ``info["dense_reward"]``."""

    def __init__(self, env: Env, env_id: str) -> None:
        task = SPARSE_TASKS.get(env_id)
        if task is None:
            raise ConfigError(
                f"env {env_id} has no sparse-reward variant; MEX defines one for {', '.join(SPARSE_TASKS)}"
            )
        if not isinstance(env, GymEnv):
            raise EnvError(
                f"the sparse-reward variant wraps a Gymnasium MuJoCo env, got {type(env).__name__}"
            )
        if env.spec.action_repeat != 1:
            raise ConfigError(
                f"the sparse reward is defined per env step: action_repeat must be 1, "
                f"not {env.spec.action_repeat}"
            )
        self._env, self.task = env, task
        self._inner = env._env.unwrapped  # the same package's wrapper: its Gymnasium MuJoCo env
        if hasattr(self._inner, "_terminate_when_unhealthy"):  # MEX: `done = False`, whatever the pose
            self._inner._terminate_when_unhealthy = False
        self._scale, self._offset = _box_affine(self._inner.action_space)
        self.spec = replace(env.spec)
        self._return = 0.0

    def reset(self) -> Step:
        self._return = 0.0
        return self._env.reset()

    def step(self, action: np.ndarray) -> Step:
        x_before = float(self._inner.data.qpos[0])
        ts = self._env.step(action)
        velocity = (float(self._inner.data.qpos[0]) - x_before) / float(self._inner.dt)
        env_action = np.clip(np.asarray(action, np.float64), -1.0, 1.0) * self._scale + self._offset
        reward = sparse_reward(velocity, env_action, self.task)
        self._return += reward
        info = {**ts.info, "dense_reward": ts.reward, "forward_velocity": velocity}
        return replace(ts, reward=reward, episode_return=self._return, info=info)

    def get_rng_state(self) -> dict[str, Any]:
        return self._env.get_rng_state()

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._env.set_rng_state(state)

    def get_state(self) -> dict[str, Any] | None:
        state = self._env.get_state()
        return None if state is None else {"env": state, "return": self._return}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env.set_state(state["env"])
        self._return = float(state["return"])

    def close(self) -> None:
        self._env.close()


def make_sparse(env_id: str, **make_gym_kwargs: Any) -> SparseVelocity:
    """`env.suite: gym_sparse`: the Gymnasium task `env_id` built as `suite: gym` builds it, with MEX's
    sparse reward (keyword arguments: those of `common.envs.gym_mujoco.make_gym`)."""
    from common.envs.gym_mujoco import make_gym

    if env_id not in SPARSE_TASKS:  # before building anything
        raise ConfigError(
            f"env {env_id} has no sparse-reward variant; MEX defines one for {', '.join(SPARSE_TASKS)}"
        )
    if make_gym_kwargs.get("pixels"):
        raise ConfigError(f"the sparse-reward {env_id} serves states only; set pixels=false")
    env = make_gym(env_id, **make_gym_kwargs)
    try:
        return SparseVelocity(env, env_id)
    except BaseException:
        env.close()
        raise


def _box_affine(space: Any) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    return (high - low) / 2.0, (high + low) / 2.0
