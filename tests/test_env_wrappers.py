"""Env wrappers: reset-to-state restores the MuJoCo simulator exactly, MEX's sparse rewards match their
definitions, and a decision interval executes each action of a sequence once, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import yaml

from common.envs import make_env
from common.envs.base import EnvSpec, Step
from common.envs.decision_interval import DecisionInterval
from common.envs.reset_state import Snapshot, reset_to, snapshot
from common.envs.sparse import SPARSE_TASKS, SparseTask, SparseVelocity, make_sparse, sparse_reward
from common.errors import ConfigError, EnvError
from common.registry import CONF_DIR

GYM_KWARGS: dict[str, Any] = dict(pixels=False, action_repeat=1, image_size=84, camera=None,
                                  max_episode_frames=None, fast_render=False, seed=0)  # fmt: skip


def gym_env(env_id: str, seed: int = 0) -> Any:
    cfg = {"suite": "gym", "name": env_id, "id": env_id, "camera": None, "max_episode_frames": 300}
    return make_env(cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=seed)


# --- reset to state --------------------------------------------------------------------------------------
def test_reset_to_state_continues_exactly_like_the_original() -> None:
    rng = np.random.default_rng(0)
    original, copy = gym_env("Hopper-v5", seed=0), gym_env("Hopper-v5", seed=7)
    original.reset()
    for _ in range(15):
        ts = original.step(rng.uniform(-1, 1, 3).astype(np.float32))
    snap = snapshot(original)
    first = reset_to(copy, snap)
    np.testing.assert_array_equal(first.obs, ts.obs)  # the observation of the same state
    assert first.episode_length == 0 and not first.done  # a new episode starts there
    for _ in range(5):  # the same actions lead to the same observations and rewards
        a = rng.uniform(-1, 1, 3).astype(np.float32)
        x, y = original.step(a), copy.step(a)
        np.testing.assert_array_equal(x.obs, y.obs)
        assert x.reward == y.reward
    original.close()
    copy.close()


def test_reset_to_state_refuses_foreign_snapshots_and_envs() -> None:
    env = gym_env("Hopper-v5")
    with pytest.raises(EnvError, match="another env"):
        reset_to(env, Snapshot(np.zeros(3), np.zeros(3)))
    env.close()
    cartpole = make_env({"suite": "gym_discrete", "id": "CartPole-v1"}, pixels=False, action_repeat=1,
                        frame_stack=1, image_size=84, seed=0)  # fmt: skip
    with pytest.raises(EnvError, match="Gymnasium MuJoCo"):
        snapshot(cartpole)
    cartpole.close()


# --- MEX sparse rewards ----------------------------------------------------------------------------------
def test_sparse_reward_matches_the_definition() -> None:
    task = SparseTask(goal_velocity=1.5, goal_radius=0.6, ctrl_cost=0.05)
    a = np.array([1.0, -0.5, 0.0])  # sum of squares 1.25
    assert sparse_reward(1.7, a, task) == pytest.approx(2.0 - 0.2 - 0.05 * 1.25)  # inside the radius
    assert sparse_reward(1.0, a, task) == pytest.approx(2.0 - 0.5 - 0.0625)
    assert sparse_reward(0.5, a, task) == pytest.approx(-0.0625)  # outside: only the control cost
    assert sparse_reward(2.5, np.zeros(3), task) == 0.0
    edge = SparseTask(goal_velocity=1.5, goal_radius=0.5, ctrl_cost=0.0)  # exact binary fractions
    assert sparse_reward(2.0, np.zeros(3), edge) == 1.5  # on the edge (f = -radius): still rewarded
    assert SPARSE_TASKS["Walker2d-v5"] == SparseTask(1.0, 0.5, 1e-3)


def test_sparse_hopper_rewards_velocity_and_never_terminates() -> None:
    env = SparseVelocity(gym_env("Hopper-v5"), "Hopper-v5")
    inner = env._inner
    env.reset()
    total, fell = 0.0, False
    for t in range(200):
        a = np.full(3, 1.0 if t % 2 else -1.0, np.float32)
        x0 = float(inner.data.qpos[0])
        ts = env.step(a)
        velocity = (float(inner.data.qpos[0]) - x0) / inner.dt
        assert ts.reward == pytest.approx(sparse_reward(velocity, a.astype(np.float64), env.task))
        assert ts.info["dense_reward"] != ts.reward
        total += ts.reward
        fell = fell or not inner.is_healthy
        assert not ts.terminated  # MEX: done = False
    assert fell, "the bang-bang actions must topple the hopper for this check to mean anything"
    assert ts.episode_return == pytest.approx(total)
    env.close()


def test_a_sparse_variant_of_an_env_without_one_is_refused() -> None:
    env = gym_env("InvertedPendulum-v5")
    with pytest.raises(ConfigError, match="no sparse-reward variant.*Hopper-v5"):
        SparseVelocity(env, "InvertedPendulum-v5")
    env.close()
    with pytest.raises(ConfigError, match="InvertedPendulum-v5 has no sparse-reward variant"):
        make_sparse("InvertedPendulum-v5", **GYM_KWARGS)


def test_make_sparse_builds_the_conf_env_files_tasks() -> None:
    for name in ("hopper_sparse", "halfcheetah_sparse", "walker2d_sparse"):
        cfg = yaml.safe_load((CONF_DIR / "env" / f"{name}.yaml").read_text())
        assert cfg["suite"] == "gym_sparse" and cfg["id"] in SPARSE_TASKS
    env = make_sparse("Walker2d-v5", **GYM_KWARGS)
    assert env.task == SPARSE_TASKS["Walker2d-v5"] and env.spec.action_shape == (6,)
    env.reset()
    assert np.isfinite(env.step(np.zeros(6, np.float32)).reward)
    env.close()


# --- decision interval -----------------------------------------------------------------------------------
@dataclass
class Recorder:
    """A 2-D action env that records every action and ends its episode after `length` steps."""

    length: int
    actions: list[np.ndarray] = field(default_factory=list)
    spec: EnvSpec = EnvSpec((1,), np.dtype(np.float32), (1,), 1, (2,), 1, 10, False)

    def reset(self) -> Step:
        self.actions.clear()
        return Step(obs=np.zeros(1, np.float32))

    def step(self, action: np.ndarray) -> Step:
        self.actions.append(np.array(action))
        n = len(self.actions)
        return Step(np.full(1, n, np.float32), reward=float(n), truncated=n >= self.length,
                    episode_return=0.0, episode_length=n)  # fmt: skip

    def get_rng_state(self) -> dict[str, Any]:
        return {}

    def set_rng_state(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def test_decision_interval_executes_each_action_once_in_order() -> None:
    inner = Recorder(length=7)
    env = DecisionInterval(inner, 3)
    assert env.spec.action_shape == (6,) and env.spec.max_episode_steps == 4
    env.reset()
    seq = np.arange(6, dtype=np.float32)
    ts = env.step(seq)
    assert [a.tolist() for a in inner.actions] == [[0, 1], [2, 3], [4, 5]]
    assert ts.reward == 1 + 2 + 3 and ts.info["executed"] == 3 and ts.episode_length == 1
    env.step(seq + 10)
    ts = env.step(seq + 20)  # the episode ends after the 7th action: the 8th and 9th are not executed
    assert len(inner.actions) == 7 and inner.actions[-1].tolist() == [20, 21]
    assert ts.truncated and ts.info["executed"] == 1 and ts.info["rewards"] == [7.0]
    assert ts.episode_return == sum(range(1, 8)) and ts.episode_length == 3


@pytest.mark.parametrize("interval", [0, -1, 1.5, True])
def test_decision_interval_refuses_j_below_one(interval: Any) -> None:
    with pytest.raises(ConfigError, match="J must be an integer >= 1"):
        DecisionInterval(Recorder(length=3), interval)
