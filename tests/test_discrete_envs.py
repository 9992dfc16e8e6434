"""Discrete-action envs: Atari (ale-py), MiniGrid and classic control behind `make_env`.

Shapes and dtypes, sticky actions (the executed actions are recorded), terminal vs truncation (life loss in
training only, time limits), seeding, train-only reward clipping, exact state snapshots, and one-line errors.
Each test plays at most a few thousand emulator frames.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from common.envs import check_env_config, make_env
from common.envs.atari import AreaResize
from common.envs.minigrid import StickyActions
from common.errors import ConfigError, EnvError

ATARI = dict(
    name="atari",
    suite="atari",
    game="pong",
    sticky_action_prob=0.0,
    noop_max=0,
    max_episode_frames=108000,
    terminal_on_life_loss=True,
    clip_rewards=True,
    fire_on_reset=False,
    full_action_space=False,
    camera=None,
)


def cfg(base: dict[str, Any], **values: Any) -> DictConfig:
    """A read-only env section, as Hydra hands it over (make_env must not write it)."""
    section = OmegaConf.create({**base, **values})
    OmegaConf.set_readonly(section, True)
    return section


def atari(seed: int = 0, evaluation: bool = False, frame_stack: int = 4, **values: Any) -> Any:
    return make_env(
        cfg(ATARI, **values),
        pixels=True,
        action_repeat=4,
        frame_stack=frame_stack,
        image_size=84,
        seed=seed,
        evaluation=evaluation,
    )


def minigrid(env_id: str = "MiniGrid-Empty-8x8-v0", seed: int = 0, **values: Any) -> Any:
    section = cfg(dict(name="minigrid", suite="minigrid", id=env_id, sticky_action_prob=0.0), **values)
    return make_env(section, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=seed)


class Recorder:
    """Stands in for an env's inner simulator and records the actions it is sent."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner, self._method, self.sent = inner, method, []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def record(action: int, *args: Any) -> Any:
            self.sent.append(int(action))
            return attr(action, *args)

        return record


def play(env: Any, actions: np.ndarray) -> list[tuple[np.ndarray, float, bool, bool]]:
    """(obs, reward, terminated, truncated) of each step, resetting after episode ends."""
    out = []
    env.reset()
    for a in actions:
        ts = env.step(a)
        out.append((ts.obs, ts.reward, ts.terminated, ts.truncated))
        if ts.done:
            env.reset()
    return out


# ---- shared pieces


def test_sticky_actions_repeat_the_previous_action_with_the_given_probability():
    chosen = np.random.default_rng(0).integers(0, 6, 20000)
    sticky = StickyActions(0.25, np.random.default_rng(1))
    executed = np.array([sticky(int(a)) for a in chosen])
    assert executed[0] == chosen[0]  # nothing to repeat yet
    previous = executed[:-1]
    differs = chosen[1:] != previous  # only here can a sticky draw be seen
    stuck = (executed[1:] == previous) & differs
    assert stuck.sum() / differs.sum() == pytest.approx(0.25, abs=0.015)  # binomial sd ~0.0035
    assert np.all((executed[1:] == chosen[1:]) | stuck)  # else the chosen action itself
    never = StickyActions(0.0, np.random.default_rng(1))
    assert [never(int(a)) for a in chosen[:100]] == list(chosen[:100])
    sticky.reset()
    assert sticky(5) == 5 and sticky.previous == 5


def test_area_resize_averages_the_covered_input_cells():
    image = np.arange(20, dtype=np.uint8).reshape(4, 5)
    # 4x5 -> 2x2: output (0, 0) covers rows 0-1 and columns 0, 1 and half of 2 (scale 2.5)
    expected = (image[:2, :2].sum() + 0.5 * image[:2, 2].sum()) / 5.0
    out = AreaResize((4, 5), (2, 2))(image)
    assert out.dtype == np.uint8 and out.shape == (2, 2)
    assert out[0, 0] == round(expected)
    assert np.all(AreaResize((210, 160), (84, 84))(np.full((210, 160), 77, np.uint8)) == 77)


# ---- Atari


def test_atari_shapes_dtypes_and_frame_stack():
    env = atari()
    spec = env.spec
    assert (spec.obs_shape, spec.frame_shape, spec.frame_stack) == ((4, 84, 84), (1, 84, 84), 4)
    assert spec.obs_dtype == np.uint8 and spec.pixels and spec.action_shape == ()
    assert spec.num_actions == 6 and spec.action_repeat == 4 and spec.max_episode_steps == 27000
    first = env.reset()
    assert first.obs.shape == (4, 84, 84) and first.obs.dtype == np.uint8
    assert all(np.array_equal(first.obs[i], first.obs[0]) for i in range(4))  # a reset repeats frame 1
    ts = env.step(0)
    assert np.array_equal(ts.obs[:3], first.obs[1:]) and ts.obs.max() > 0
    env.close()


def test_atari_sticky_actions_act_per_frame_with_the_given_probability():
    env = atari(sticky_action_prob=0.25, frame_stack=1)
    inner = env._env if hasattr(env, "_env") else env
    inner._ale = recorder = Recorder(inner._ale, "act")
    env.reset()
    chosen_steps = np.random.default_rng(0).integers(0, 6, 1500)
    chosen = []
    for a in chosen_steps:
        n = len(recorder.sent)
        ts = env.step(a)
        chosen += [inner._actions[a]] * (len(recorder.sent) - n)
        if ts.done:
            env.reset()
            recorder.sent.append(0)  # after a new game the previous action is NOOP again
            chosen.append(0)
    sent, chosen_arr = np.array(recorder.sent), np.array(chosen)
    previous = np.concatenate([[0], sent[:-1]])
    differs = chosen_arr != previous
    assert np.all((sent == chosen_arr) | (sent == previous))
    assert ((sent == previous) & differs).sum() / differs.sum() == pytest.approx(0.25, abs=0.04)


def test_atari_life_loss_ends_training_episodes_only_and_the_game_goes_on():
    actions = np.random.default_rng(0).integers(0, 4, 3000)
    train = atari(game="breakout")  # random actions press FIRE to serve
    ts, k = train.reset(), 0
    while not ts.done:
        ts, k = train.step(actions[k]), k + 1
    assert ts.terminated and not ts.truncated and ts.info == {"game_over": False}
    lost_at, length = k, ts.episode_length
    cont = train.reset()  # the same game continues from the current screen
    assert cont.episode_length == length and np.array_equal(cont.obs[-1], ts.obs[-1])
    assert all(np.array_equal(cont.obs[i], ts.obs[-1]) for i in range(4))  # a fresh stack

    evaluate = atari(game="breakout", evaluation=True)
    ts, k = evaluate.reset(), 0
    while not ts.done:
        ts, k = evaluate.step(actions[k]), k + 1
    assert k > lost_at and ts.terminated and ts.info == {"game_over": True}  # a whole game: five lives


def test_atari_time_limit_truncates():
    env = atari(max_episode_frames=40)
    env.reset()
    steps = [env.step(1) for _ in range(10)]
    assert not any(s.done for s in steps[:-1])
    assert steps[-1].truncated and not steps[-1].terminated and steps[-1].info == {"game_over": True}
    assert env.reset().episode_length == 0  # a new game


def test_atari_seeding_gives_identical_episodes():
    actions = np.random.default_rng(0).integers(0, 6, 300)
    runs = [play(atari(seed=s, sticky_action_prob=0.25, noop_max=30), actions) for s in (3, 3, 4)]
    same, other = runs[1], runs[2]
    for (o1, r1, d1, t1), (o2, r2, d2, t2) in zip(runs[0], same, strict=True):
        assert np.array_equal(o1, o2) and (r1, d1, t1) == (r2, d2, t2)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(runs[0], other, strict=True))


def test_atari_clips_rewards_in_training_only():
    actions = np.random.default_rng(1).integers(0, 6, 400)
    common = dict(game="space_invaders", terminal_on_life_loss=False)
    train, evaluate = atari(**common), atari(evaluation=True, **common)
    train.reset(), evaluate.reset()
    raw = []
    for a in actions:
        t, e = train.step(a), evaluate.step(a)
        assert t.reward == np.sign(e.reward) and t.episode_return == e.episode_return
        raw.append(e.reward)
        if e.done:
            break
    assert max(raw) > 1  # Space Invaders scores 5-30 per invader: clipping was exercised
    assert e.episode_return == sum(raw)


def test_atari_rng_state_is_json_safe_and_replays_episodes():
    env = atari(sticky_action_prob=0.25, noop_max=30)
    saved = json.loads(json.dumps(env.get_rng_state()))
    actions = np.random.default_rng(0).integers(0, 6, 60)
    before = play(env, actions)
    env.set_rng_state(saved)
    after = play(env, actions)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(before, after, strict=True))


def test_atari_state_snapshot_resumes_mid_episode_exactly():
    env = atari(sticky_action_prob=0.25, noop_max=30)
    actions = np.random.default_rng(2).integers(0, 6, 80)
    env.reset()
    for a in actions[:40]:
        env.step(a)
    buffer = io.BytesIO()
    torch.save(env.get_state(), buffer)
    rest = [env.step(a) for a in actions[40:]]
    buffer.seek(0)
    fresh = atari(seed=9, sticky_action_prob=0.25, noop_max=30)  # built alike, then restored
    fresh.set_state(torch.load(buffer, weights_only=True))
    again = [fresh.step(a) for a in actions[40:]]
    for x, y in zip(rest, again, strict=True):
        assert np.array_equal(x.obs, y.obs) and (x.reward, x.episode_return, x.episode_length) == (
            y.reward,
            y.episode_return,
            y.episode_length,
        )


# ---- MiniGrid


def test_minigrid_observation_is_the_full_symbolic_grid():
    env = minigrid("MiniGrid-DoorKey-5x5-v0")
    spec = env.spec
    assert spec.obs_shape == (3, 5, 5) and spec.obs_dtype == np.uint8 and not spec.pixels
    assert spec.num_actions == 7 and spec.max_episode_steps == 250
    ts = env.reset()
    grid = env._grid
    x, y = grid.agent_pos
    assert tuple(ts.obs[:, y, x]) == (10, 0, grid.agent_dir)  # agent, red, direction (FullyObsWrapper)
    assert np.all(ts.obs[0, 0, :] == 2)  # the top wall row
    key = list(zip(*np.nonzero(ts.obs[0] == 5), strict=True))  # OBJECT_TO_IDX["key"]
    assert len(key) == 1 and grid.grid.get(key[0][1], key[0][0]).type == "key"


def test_minigrid_goal_terminates_and_time_limit_truncates():
    env = minigrid("MiniGrid-Empty-5x5-v0")
    env.reset()  # agent at (1, 1) facing east, goal at (3, 3)
    path = [2, 2, 1, 2, 2]  # forward, forward, right (now south), forward, forward
    steps = [env.step(a) for a in path]
    assert steps[-1].terminated and not steps[-1].truncated and steps[-1].reward > 0.9
    short = minigrid("MiniGrid-Empty-5x5-v0", max_episode_frames=7)
    short.reset()
    steps = [short.step(0) for _ in range(7)]  # turning in place never reaches the goal
    assert steps[-1].truncated and not steps[-1].terminated and not any(s.done for s in steps[:-1])


def test_minigrid_sticky_actions_and_seeding():
    env = minigrid(sticky_action_prob=0.5, seed=1)
    env._env = recorder = Recorder(env._env, "step")
    env.reset()
    chosen = np.random.default_rng(0).integers(0, 3, 600)  # turns and forward: episodes stay long
    starts = [0]
    for a in chosen:
        if env.step(a).done:
            env.reset()
            starts.append(len(recorder.sent))
    sent = np.array(recorder.sent)
    previous = np.concatenate([[-1], sent[:-1]])
    previous[starts] = -1  # the first step of an episode executes its own action
    differs = (chosen != previous) & (previous >= 0)
    assert np.all((sent == chosen) | (sent == previous))
    assert ((sent == previous) & differs).sum() / differs.sum() == pytest.approx(0.5, abs=0.08)

    actions = np.random.default_rng(3).integers(0, 7, 300)
    one, two = (play(minigrid("MiniGrid-DoorKey-5x5-v0", seed=5), actions) for _ in range(2))
    assert all(np.array_equal(a[0], b[0]) and a[1:] == b[1:] for a, b in zip(one, two, strict=True))
    layouts = {minigrid("MiniGrid-DoorKey-5x5-v0", seed=s).reset().obs.tobytes() for s in range(6)}
    assert len(layouts) > 1  # the seed chooses the layout


def test_minigrid_effective_horizon_options():
    """`reward: success` pays exactly 1 at the goal; `num_actions: 3` keeps left/right/forward;
    `layout_seed` gives every episode the same layout while the run's seed would change it."""
    env = minigrid("MiniGrid-Empty-5x5-v0", reward="success", num_actions=3)
    assert env.spec.num_actions == 3
    env.reset()
    steps = [env.step(a) for a in [2, 2, 1, 2, 2]]  # the goal in 5 steps
    assert steps[-1].terminated and steps[-1].reward == 1.0 and all(s.reward == 0.0 for s in steps[:-1])
    with pytest.raises(EnvError, match=r"outside \[0, 3\)"):
        env.reset()
        env.step(3)  # pickup is not kept
    fixed = minigrid("MiniGrid-DoorKey-5x5-v0", seed=3, layout_seed=0)
    layouts = set()
    for _ in range(4):
        layouts.add(fixed.reset().obs.tobytes())
        fixed.step(0)
    assert layouts == {minigrid("MiniGrid-DoorKey-5x5-v0", seed=9, layout_seed=0).reset().obs.tobytes()}
    # `bridge`: the authors' action set per task (3 in Empty-*, 6 elsewhere)
    assert minigrid("MiniGrid-Empty-8x8-v0", num_actions="bridge").spec.num_actions == 3
    assert minigrid("MiniGrid-DoorKey-5x5-v0", num_actions="bridge").spec.num_actions == 6
    moving = minigrid("MiniGrid-DoorKey-5x5-v0", seed=3)
    assert len({moving.reset().obs.tobytes() for _ in range(6)}) > 1  # without it, episodes differ


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"reward": "dense"}, "env.reward must be default or success"),
        ({"num_actions": 9}, "env.num_actions must be null, bridge or an integer in"),
        ({"num_actions": "all"}, "env.num_actions must be null, bridge or an integer in"),
        ({"layout_seed": -1}, "env.layout_seed must be null or an integer >= 0"),
    ],
)
def test_minigrid_bad_options_are_one_line_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        minigrid(**values)


def test_minigrid_state_snapshot_keeps_object_references():
    env = minigrid("MiniGrid-Unlock-v0", seed=2)
    env.reset()
    state = env.get_state()
    grid = env._grid
    door_before = grid.door
    fresh = minigrid("MiniGrid-Unlock-v0", seed=7)
    fresh.set_state(state)
    restored = fresh._grid
    x, y = restored.door.cur_pos
    assert restored.grid.get(x, y) is restored.door  # Unlock's success test reads this reference
    assert door_before.cur_pos == restored.door.cur_pos
    actions = np.random.default_rng(0).integers(0, 7, 50)
    a = [env.step(u) for u in actions]
    b = [fresh.step(u) for u in actions]
    assert all(np.array_equal(x.obs, y.obs) and x.reward == y.reward for x, y in zip(a, b, strict=True))


# ---- classic control


@pytest.mark.parametrize(
    ("env_id", "limit", "num_actions"), [("Acrobot-v1", 500, 3), ("MountainCar-v0", 200, 3)]
)
def test_classic_control_random_policy_runs_to_the_time_limit(env_id, limit, num_actions):
    section = cfg(dict(name=env_id, suite="gym_discrete", id=env_id, max_episode_frames=None))
    env = make_env(section, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=0)
    assert env.spec.num_actions == num_actions and env.spec.max_episode_steps == limit
    ts, rng, n = env.reset(), np.random.default_rng(0), 0
    while not ts.done:
        ts, n = env.step(rng.integers(num_actions)), n + 1
    assert n == limit and ts.truncated and ts.episode_return == -limit  # -1 per step, the goal not reached


# ---- bad input


@pytest.mark.parametrize(
    ("section", "pixels", "error", "words"),
    [
        (dict(ATARI, game="pongg"), True, EnvError, ["unknown Atari game 'pongg'", "pong"]),
        (dict(ATARI, game="spaceinvaders"), True, EnvError, ["space_invaders"]),
        (ATARI, False, ConfigError, ["pixels only", "paper.pixels=true"]),
        (dict(ATARI, sticky_action_prob=1.0), True, ConfigError, ["sticky_action_prob"]),
        (dict(suite="minigrid", id="MiniGrid-Empty-8x8-v9"), False, EnvError, ["MiniGrid-Empty-8x8-v0"]),
        (dict(suite="minigrid", id="MiniGrid-Empty-8x8-v0"), True, ConfigError, ["paper.pixels=false"]),
    ],
)
def test_bad_input_is_one_line_before_anything_is_built(section, pixels, error, words):
    with pytest.raises(error) as info:
        check_env_config(cfg(section), pixels=pixels, action_repeat=4, image_size=84)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
