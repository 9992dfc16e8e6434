"""common.envs: shapes, action repeat and rescaling, frame stacking, episode ends, RNG state, cameras, errors.

Pixel tests use `fast_render` (cheaper, different pixels) and short episodes; the file runs in well under a
minute on one CPU thread. dm_control and gymnasium are imported inside the tests, after `common.envs` has
chosen the GL backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from common.envs import Env, action_affine, make_env
from common.errors import ConfigError, EnvError

REPO = Path(__file__).resolve().parents[1]


def env_cfg(**values: Any) -> DictConfig:
    """A read-only env section, as Hydra would hand it over (make_env must not write it)."""
    base: dict[str, Any] = dict(camera=0, max_episode_frames=None, fast_render=True)
    if "id" in values:
        base.update(name=values["id"], suite="gym", camera=None)
    else:
        base.update(name=f"{values['domain']}_{values['task']}", suite="dmc")
    cfg = OmegaConf.create({**base, **values})
    OmegaConf.set_readonly(cfg, True)
    OmegaConf.set_struct(cfg, True)
    return cfg


CHEETAH = dict(domain="cheetah", task="run")
HOPPER = dict(id="Hopper-v5")


@contextmanager
def opened(
    cfg: DictConfig,
    *,
    pixels: bool = False,
    action_repeat: int = 1,
    frame_stack: int = 1,
    image_size: int = 32,
    seed: int = 0,
) -> Iterator[Env]:
    env = make_env(
        cfg,
        pixels=pixels,
        action_repeat=action_repeat,
        frame_stack=frame_stack,
        image_size=image_size,
        seed=seed,
    )
    try:
        yield env
    finally:
        env.close()


def raw_dmc(domain: str, task: str, seed: int) -> Any:
    from dm_control import suite

    return suite.load(domain, task, task_kwargs={"random": seed})


def flat(observation: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(v) for v in observation.values()]).astype(np.float32)


def actions(shape: tuple[int, ...], n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(n)]


# ---- shapes and dtypes ----


@pytest.mark.parametrize(
    ("values", "obs_dim", "act_dim"),
    [(CHEETAH, 17, 6), (dict(domain="dog", task="run"), 223, 38), (HOPPER, 11, 3)],
    ids=["cheetah_run", "dog_run", "hopper"],
)
def test_state_shapes(values: dict, obs_dim: int, act_dim: int) -> None:
    with opened(env_cfg(**values, max_episode_frames=20), action_repeat=2) as env:
        spec = env.spec
        assert spec.obs_shape == spec.frame_shape == (obs_dim,)
        assert spec.obs_dtype == np.float32 and not spec.pixels
        assert spec.action_shape == (act_dim,) and spec.max_episode_steps == 10 and spec.frame_stack == 1
        step = env.reset()
        assert step.obs.shape == (obs_dim,) and step.obs.dtype == np.float32
        assert (step.episode_length, step.episode_return, step.done) == (0, 0.0, False)
        step = env.step(np.zeros(act_dim, np.float32))
        assert step.obs.shape == (obs_dim,) and step.obs.dtype == np.float32
        assert isinstance(step.reward, float) and step.episode_length == 1


@pytest.mark.parametrize(
    "values", [CHEETAH, dict(domain="dog", task="run"), HOPPER], ids=["cheetah_run", "dog_run", "hopper"]
)
def test_pixel_shapes(values: dict) -> None:
    with opened(env_cfg(**values, max_episode_frames=20), pixels=True, action_repeat=2, frame_stack=3) as env:
        spec = env.spec
        assert spec.pixels and spec.obs_shape == (9, 32, 32) and spec.frame_shape == (3, 32, 32)
        assert spec.obs_dtype == np.uint8 and spec.frame_stack == 3
        step = env.reset()
        assert step.obs.shape == (9, 32, 32) and step.obs.dtype == np.uint8 and step.obs.flags.c_contiguous
        step = env.step(np.zeros(spec.action_shape, np.float32))
        assert step.obs.shape == (9, 32, 32) and step.obs.dtype == np.uint8
        assert step.obs.std() > 0  # an image, not a blank buffer


def test_state_vector_is_the_observation_dict_in_spec_order() -> None:
    raw = raw_dmc("walker", "walk", seed=4)  # walker has a scalar entry ("height")
    with opened(env_cfg(domain="walker", task="walk"), seed=4) as env:
        assert list(raw.observation_spec()) == ["orientations", "height", "velocity"]
        np.testing.assert_array_equal(env.reset().obs, flat(raw.reset().observation))
        for a in actions(env.spec.action_shape, 3):
            np.testing.assert_array_equal(env.step(a).obs, flat(raw.step(a).observation))


# ---- action repeat and rescaling ----


def test_action_repeat_sums_rewards_like_raw_dmc() -> None:
    raw = raw_dmc("walker", "walk", seed=3)  # walker's reward is > 0 from the first step, cheetah's is 0
    with opened(env_cfg(domain="walker", task="walk"), action_repeat=3, seed=3) as env:
        np.testing.assert_array_equal(env.reset().obs, flat(raw.reset().observation))
        total = 0.0
        for a in actions(env.spec.action_shape, 10):
            expected = 0.0
            for _ in range(3):
                time_step = raw.step(a)
                expected += time_step.reward
            step = env.step(a)
            total += expected
            assert step.reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
            np.testing.assert_array_equal(step.obs, flat(time_step.observation))
        assert step.episode_return == pytest.approx(total) and step.episode_length == 10
        assert total > 0  # rewards were actually summed, not all zero


@pytest.mark.parametrize("domain_task", [("finger", "spin"), ("ball_in_cup", "catch"), ("quadruped", "walk")])
def test_observation_free_inner_frames_match_raw_env_step(domain_task: tuple[str, str]) -> None:
    domain, task = domain_task
    raw = raw_dmc(domain, task, seed=6)
    with opened(env_cfg(domain=domain, task=task), action_repeat=4, seed=6) as env:
        assert env._skip_obs  # type: ignore[attr-defined]
        np.testing.assert_array_equal(env.reset().obs, flat(raw.reset().observation))
        affine = action_affine(raw.action_spec().minimum, raw.action_spec().maximum)  # quadruped: not [-1, 1]
        for a in actions(env.spec.action_shape, 8):
            raw_action = a if affine is None else a * affine[0] + affine[1]
            raw_steps = [raw.step(raw_action) for _ in range(4)]
            step = env.step(a)
            assert step.reward == pytest.approx(sum(t.reward for t in raw_steps), rel=1e-12, abs=1e-12)
            np.testing.assert_array_equal(step.obs, flat(raw_steps[-1].observation))


def test_termination_on_an_inner_frame_ends_the_step_there() -> None:
    raw = raw_dmc("walker", "walk", seed=8)
    dt = raw.control_timestep()

    def end_after_5_frames(task: Any) -> None:  # dm_control suite tasks (bar lqr) never terminate
        task.get_termination = lambda physics: 0.0 if physics.time() > 4.5 * dt else None

    end_after_5_frames(raw.task)
    with opened(env_cfg(domain="walker", task="walk"), action_repeat=4, seed=8) as env:
        end_after_5_frames(env._env.task)  # type: ignore[attr-defined]
        env.reset()
        raw.reset()
        a = actions((6,), 1)[0]
        first = env.step(a)
        assert not first.done
        second = env.step(a)  # frames 5..8: ends at frame 5, the first of this step
        expected = [raw.step(a) for _ in range(5)]
        assert expected[-1].last() and expected[-1].discount == 0.0
        assert second.terminated and not second.truncated and second.episode_length == 2
        assert second.reward == pytest.approx(expected[-1].reward, rel=1e-12)
        np.testing.assert_array_equal(second.obs, flat(expected[-1].observation))
        assert env.reset().episode_length == 0 and not env.step(a).done


def test_actions_are_clipped_then_rescaled() -> None:
    scale, offset = action_affine(np.array([0.0, -2.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(np.array([-1.0, -1.0]) * scale + offset, [0.0, -2.0])
    np.testing.assert_allclose(np.array([1.0, 1.0]) * scale + offset, [1.0, 2.0])
    np.testing.assert_allclose(np.array([0.0, 0.5]) * scale + offset, [0.5, 1.0])
    assert action_affine(-np.ones(3), np.ones(3)) is None

    with opened(env_cfg(id="InvertedPendulum-v5")) as env:  # bounds [-3, 3]
        data = env._env.unwrapped.data  # type: ignore[attr-defined]
        env.reset()
        env.step(np.array([0.5], np.float32))
        assert data.ctrl[0] == pytest.approx(1.5)
        env.step(np.array([7.0], np.float32))
        assert data.ctrl[0] == pytest.approx(3.0)

    with opened(env_cfg(domain="quadruped", task="walk")) as env:  # DMC bounds such as [-1, 1.1], [-0.8, 0.8]
        spec = raw_dmc("quadruped", "walk", seed=0).action_spec()
        low, high = spec.minimum, spec.maximum
        assert not np.all(low == -1)
        env.reset()
        a = np.linspace(-1.5, 1.5, 12).astype(np.float32)
        env.step(a)
        expected = low + (np.clip(a, -1, 1) + 1) / 2 * (high - low)
        np.testing.assert_allclose(env._env.physics.data.ctrl, expected, rtol=1e-6, atol=1e-7)  # type: ignore[attr-defined]

    with opened(env_cfg(**CHEETAH)) as env:  # bounds [-1, 1]: clipped only
        env.reset()
        action = np.array([2.0, -5.0, 0.25, -0.5, 1.0, 0.1], np.float32)
        before = action.copy()
        env.step(action)
        np.testing.assert_allclose(env._env.physics.data.ctrl, [1, -1, 0.25, -0.5, 1, 0.1], rtol=1e-6)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(action, before)  # the caller's array is not modified


# ---- frame stacking ----


def test_frame_stack_starts_with_copies_and_shifts_by_one_frame() -> None:
    cfg = env_cfg(**CHEETAH, max_episode_frames=40)
    with (
        opened(cfg, pixels=True, action_repeat=2, frame_stack=3, seed=5) as stacked,
        opened(cfg, pixels=True, action_repeat=2, frame_stack=1, seed=5) as single,
    ):
        obs = stacked.reset().obs
        frame = single.reset().obs
        assert single.spec.obs_shape == (3, 32, 32)
        for i in range(3):
            np.testing.assert_array_equal(obs[3 * i : 3 * i + 3], frame)
        for a in actions(stacked.spec.action_shape, 4):
            new = stacked.step(a).obs
            frame = single.step(a).obs
            np.testing.assert_array_equal(new[:6], obs[3:])
            np.testing.assert_array_equal(new[6:], frame)
            assert not np.array_equal(new[6:], new[3:6])  # the cheetah moved
            obs = new


# ---- episode ends ----


def test_hopper_fall_is_terminated_not_truncated() -> None:
    with opened(env_cfg(**HOPPER), action_repeat=2) as env:
        env.reset()
        for _ in range(env.spec.max_episode_steps):
            step = env.step(np.array([1.0, -1.0, 1.0], np.float32))  # falls after ~10 frames
            if step.done:
                break
        assert step.terminated and not step.truncated
        assert step.episode_length < 20
        with pytest.raises(EnvError, match="reset"):
            env.step(np.zeros(3, np.float32))
        assert env.reset().episode_length == 0


def test_hopper_max_episode_frames_truncates() -> None:
    with opened(env_cfg(**HOPPER, max_episode_frames=5), action_repeat=2) as env:
        assert env.spec.max_episode_steps == 3
        env.reset()
        ends = [env.step(np.zeros(3, np.float32)) for _ in range(3)]
        assert [s.truncated for s in ends] == [False, False, True]
        assert not any(s.terminated for s in ends)


def test_dmc_time_limit_is_truncated() -> None:
    with opened(env_cfg(**CHEETAH), action_repeat=8) as env:  # 1000 frames = 125 agent steps
        assert env.spec.max_episode_steps == 125
        env.reset()
        zero = np.zeros(6, np.float32)
        steps = [env.step(zero) for _ in range(125)]
        assert not any(s.done for s in steps[:-1])
        assert steps[-1].truncated and not steps[-1].terminated and steps[-1].episode_length == 125


def test_dmc_max_episode_frames_truncates_at_the_right_frame() -> None:
    # 11 frames at action repeat 2: 6 agent steps, the last one a single frame.
    raw = raw_dmc("cheetah", "run", seed=2)
    raw.reset()
    with opened(env_cfg(**CHEETAH, max_episode_frames=11), action_repeat=2, seed=2) as env:
        assert env.spec.max_episode_steps == 6
        env.reset()
        for i, a in enumerate(actions((6,), 6)):
            step = env.step(a)
            expected = sum(raw.step(a).reward for _ in range(2 if i < 5 else 1))
            assert step.reward == pytest.approx(expected, rel=1e-12)
            assert step.truncated == (i == 5) and not step.terminated
        assert env._env.physics.time() == pytest.approx(11 * raw.control_timestep())  # type: ignore[attr-defined]


# ---- RNG state ----


@pytest.mark.parametrize("values", [CHEETAH, HOPPER], ids=["dmc", "gym"])
def test_rng_state_round_trip_gives_the_same_next_episode(values: dict) -> None:
    cfg = env_cfg(**values, max_episode_frames=6)
    make = dict(action_repeat=2, seed=7)
    acts = actions((6,) if "domain" in values else (3,), 3, seed=1)
    with opened(cfg, **make) as env, opened(cfg, **make) as fresh, opened(cfg, **make) as unrestored:
        env.reset()
        for a in acts:
            step = env.step(a)
        assert step.done
        state = json.loads(json.dumps(env.get_rng_state()))  # JSON-safe
        fresh.set_rng_state(state)
        first = unrestored.reset().obs
        expected = env.reset().obs
        got = fresh.reset().obs
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(first, expected)  # the restored state, not the seed, decided it
        for a in acts:
            np.testing.assert_array_equal(fresh.step(a).obs, env.step(a).obs)


def test_gym_rng_state_before_the_first_reset_keeps_the_seed() -> None:
    cfg = env_cfg(**HOPPER)
    with opened(cfg, seed=3) as env, opened(cfg, seed=99) as other:
        other.set_rng_state(json.loads(json.dumps(env.get_rng_state())))
        np.testing.assert_array_equal(other.reset().obs, env.reset().obs)


# ---- simulator state (mid-episode checkpoints) ----


def _weights_only_round_trip(state: Any) -> Any:
    """What a checkpoint gives back: `torch.save`, then `torch.load(weights_only=True)`."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    ("values", "make"),
    [
        (CHEETAH, dict(action_repeat=2)),
        (dict(domain="reacher", task="hard"), dict(action_repeat=2)),  # its reset moves the target geom
        (dict(domain="cartpole", task="swingup"), dict(pixels=True, frame_stack=3, action_repeat=2)),
        (HOPPER, dict(action_repeat=2)),  # terminates early: episodes of several lengths
        (HOPPER, dict(pixels=True, frame_stack=2)),
        (dict(id="Pendulum-v1"), dict(time_feature=True)),  # classic control, with stream-x's time feature
        (dict(id="CartPole-v1", suite="gym_discrete", camera=None), dict()),
    ],
    ids=["dmc", "dmc-model-edit", "dmc-pixels", "gym-mujoco", "gym-pixels", "classic-time", "discrete"],
)
def test_a_restored_env_continues_exactly_as_the_captured_one(values: dict, make: dict) -> None:
    from common.envs.time_feature import TimeFeature

    cfg = env_cfg(**values, max_episode_frames=24)
    time_feature = make.pop("time_feature", False)
    with opened(cfg, seed=5, **make) as captured, opened(cfg, seed=5, **make) as restored:
        if time_feature:
            captured, restored = TimeFeature(captured), TimeFeature(restored)
        spec = captured.spec
        rng = np.random.default_rng(0)

        def act() -> Any:
            n = getattr(captured, "num_actions", None)
            return rng.integers(n) if n else rng.uniform(-1, 1, spec.action_shape).astype(np.float32)

        step = captured.reset()
        for _ in range(17):  # into the first or a later episode
            step = captured.reset() if step.done else captured.step(act())
        state = captured.get_state()
        assert state is not None
        restored.reset()
        restored.step(act())  # whatever it was doing before, set_state decides what follows
        restored.set_state(_weights_only_round_trip(state))
        for _ in range(40):  # on through episode ends and resets
            if step.done:
                step, other = captured.reset(), restored.reset()
            else:
                action = act()
                step, other = captured.step(action), restored.step(action)
            np.testing.assert_array_equal(other.obs, step.obs)
            assert (other.reward, other.terminated, other.truncated) == (
                step.reward,
                step.terminated,
                step.truncated,
            )
            assert (other.episode_return, other.episode_length) == (step.episode_return, step.episode_length)


def test_an_env_that_cannot_capture_its_state_says_none() -> None:
    from common.envs import FrameStack
    from common.envs.base import EnvSpec, env_state
    from common.envs.time_feature import TimeFeature

    class Bare:  # a new suite's env without get_state / set_state
        spec = EnvSpec((3, 8, 8), np.dtype(np.uint8), (3, 8, 8), 1, (1,), 1, 10, True)

    assert env_state(Bare()) is None  # type: ignore[arg-type]
    assert FrameStack(Bare(), 2).get_state() is None  # type: ignore[arg-type]
    assert TimeFeature(Bare()).get_state() is None  # type: ignore[arg-type]


# ---- cameras ----


def test_quadruped_camera_2_renders_that_camera() -> None:
    from common.envs import apply_fast_render

    cfg = env_cfg(domain="quadruped", task="run", camera=2)
    with opened(cfg, pixels=True, seed=1) as env:
        obs = env.reset().obs
    raw = raw_dmc("quadruped", "run", seed=1)
    try:
        apply_fast_render(raw.physics.model.ptr, 32)
        raw.reset()
        expected = raw.physics.render(32, 32, camera_id=2).transpose(2, 0, 1)
        other = raw.physics.render(32, 32, camera_id=0).transpose(2, 0, 1)
    finally:
        raw.physics.free()
    np.testing.assert_array_equal(obs, expected)
    assert not np.array_equal(obs, other)


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        (
            dict(**CHEETAH, camera=5),
            r"unknown camera 5 for DMC cheetah_run; valid cameras: 0 \('side'\), 1 \('back'\)",
        ),
        (dict(**CHEETAH, camera="top"), r"unknown camera 'top' .*0 \('side'\), 1 \('back'\), or -1"),
        (dict(**HOPPER, camera=3), r"unknown camera 3 for Gymnasium Hopper-v5; valid cameras: 0 \('track'\)"),
    ],
    ids=["dmc_index", "dmc_name", "gym_index"],
)
def test_unknown_camera(values: dict, pattern: str) -> None:
    with pytest.raises(EnvError, match=pattern) as info:
        make_env(env_cfg(**values), pixels=True, action_repeat=1, frame_stack=1, image_size=32, seed=0)
    assert "\n" not in str(info.value)


# ---- configuration and lookup errors ----


@pytest.mark.parametrize(
    ("values", "error", "pattern"),
    [
        (
            dict(domain="cheetah", task="fly"),
            EnvError,
            r"unknown DMC task 'fly' for domain 'cheetah'; valid tasks: run",
        ),
        (
            dict(domain="chita", task="run"),
            EnvError,
            r"unknown DMC domain 'chita'; valid domains: acrobot, .*cheetah",
        ),
        (dict(id="Hopper-v99"), EnvError, r"unknown Gymnasium env id 'Hopper-v99'"),
        (
            dict(domain="cheetah", task="run", suite="procgen"),
            ConfigError,
            r"env.suite must be 'dmc', 'gym', .* got 'procgen'",
        ),
    ],
    ids=["dmc_task", "dmc_domain", "gym_id", "suite"],
)
def test_unknown_names(values: dict, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern) as info:
        make_env(env_cfg(**values), pixels=False, action_repeat=1, frame_stack=1, image_size=32, seed=0)
    assert "\n" not in str(info.value)


def test_frame_stack_needs_pixels() -> None:
    with pytest.raises(ConfigError, match="frame_stack must be 1 for state observations"):
        make_env(env_cfg(**CHEETAH), pixels=False, action_repeat=1, frame_stack=3, image_size=32, seed=0)


@pytest.mark.skipif(
    bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")), reason="has a display"
)
def test_missing_gl_backend_is_one_line_with_the_packages(tmp_path: Path) -> None:
    # GLFW without a display is the "no GL platform library loaded" failure, on any headless machine.
    code = (
        "from omegaconf import OmegaConf\n"
        "from common.envs import make_env\n"
        "from common.errors import EnvError\n"
        "cfg = OmegaConf.create(dict(suite='dmc', domain='cheetah', task='run', fast_render=True))\n"
        "try:\n"
        "    make_env(cfg, pixels=True, action_repeat=1, frame_stack=1, image_size=32, seed=0)\n"
        "except EnvError as e:\n"
        "    print('ENVERROR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYOPENGL_PLATFORM", "DISPLAY")}
    env.update(MUJOCO_GL="glfw", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("ENVERROR")]
    assert len(lines) == 1, out.stdout + out.stderr
    assert "MUJOCO_GL=glfw" in lines[0]
    assert (
        "apt-get install libegl1 libgl1 libgl1-mesa-dri libegl-mesa0" in lines[0] and "libosmesa6" in lines[0]
    )
