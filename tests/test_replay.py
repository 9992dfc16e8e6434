"""NStepReplay against hand-computed n-step returns, frame stacks and a brute-force reference."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest

from common.buffers import Batch, NStepReplay
from common.envs.base import EnvSpec
from common.errors import CheckpointError, ConfigError

K = 3  # frame stack used by the pixel tests


def pixel_spec(frame_shape=(2, 1, 1), action_dim=1) -> EnvSpec:
    return EnvSpec(
        obs_shape=(K * frame_shape[0], *frame_shape[1:]),
        obs_dtype=np.dtype(np.uint8),
        frame_shape=frame_shape,
        frame_stack=K,
        action_shape=(action_dim,),
        action_repeat=1,
        max_episode_steps=1000,
        pixels=True,
    )


def frame(ep: int, step: int) -> np.ndarray:
    """A tiny frame whose two channels read (episode, step)."""
    return np.array([ep, step], np.uint8).reshape(2, 1, 1)


_FIELDS = ("obs", "action", "reward", "discount", "next_obs")


def stack(ep: int, *steps: int) -> np.ndarray:
    return np.concatenate([frame(ep, s) for s in steps])


class Player:
    """Feeds a buffer observations as the env's frame stack produces them (first frame repeated at reset)."""

    def __init__(self, buf: NStepReplay) -> None:
        self.buf = buf
        self.frames: deque[np.ndarray] = deque(maxlen=K)
        self.ep = self.step = 0

    def first(self, ep: int) -> None:
        self.ep, self.step = ep, 0
        self.frames.extend([frame(ep, 0)] * K)
        self.buf.add_first(np.concatenate(self.frames))

    def add(self, reward: float, terminated: bool = False, truncated: bool = False) -> None:
        self.step += 1
        self.frames.append(frame(self.ep, self.step))
        action = np.array([100 * self.ep + self.step], np.float32)  # the action that led to this step
        self.buf.add(action, reward, np.concatenate(self.frames), terminated, truncated)

    def episode(self, ep: int, rewards, terminated: bool = False, truncated: bool = False) -> None:
        self.first(ep)
        for i, r in enumerate(rewards):
            last = i == len(rewards) - 1
            self.add(r, terminated and last, truncated and last)


def transitions(buf: NStepReplay, draws: int = 1000) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Every transition the buffer can return, keyed by (episode, step) of obs; checks duplicates agree."""
    batch = buf.sample(draws)
    keys = batch.obs[:, -2, 0, 0].astype(int) * 256 + batch.obs[:, -1, 0, 0]
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    out: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, i in zip(uniq, first, strict=True):
        out[(int(key) // 256, int(key) % 256)] = {f: getattr(batch, f)[i] for f in _FIELDS}
    for f in _FIELDS:  # every draw of a transition is identical
        np.testing.assert_array_equal(getattr(batch, f), getattr(batch, f)[first][inverse])
    return out


def make(capacity=100, nstep=3, discount=0.5, seed=0, **spec_kw) -> NStepReplay:
    return NStepReplay(pixel_spec(**spec_kw), capacity=capacity, nstep=nstep, discount=discount, seed=seed)


# ------------------------------------------------------------------------------------------- n-step returns


def test_nstep_return_mid_episode_and_near_truncation():
    buf = make(nstep=3, discount=0.5)
    p = Player(buf)
    p.first(ep=1)
    for r in [1, 2, 4, 8, 16, 32]:  # rewards arriving with steps 1..6
        p.add(r)
    # Running episode with steps 0..6: only t with t+3 <= 6 have a complete window.
    assert len(buf) == 7 and buf.num_transitions() == 4
    got = transitions(buf)
    assert sorted(got) == [(1, 0), (1, 1), (1, 2), (1, 3)]
    t1 = got[(1, 1)]
    assert t1["reward"][0] == 2 + 0.5 * 4 + 0.25 * 8  # = 6
    assert t1["discount"][0] == 0.125
    assert t1["action"][0] == 102  # the action taken at step 1 led to step 2
    np.testing.assert_array_equal(t1["obs"], stack(1, 0, 0, 1))
    np.testing.assert_array_equal(t1["next_obs"], stack(1, 2, 3, 4))

    p.add(64, truncated=True)  # step 7 ends the episode by time limit
    assert buf.num_transitions() == 7  # t = 0..6; the last step starts nothing
    got = transitions(buf)
    assert sorted(got) == [(1, s) for s in range(7)]
    t4, t5, t6 = got[(1, 4)], got[(1, 5)], got[(1, 6)]
    assert (t4["reward"][0], t4["discount"][0]) == (
        16 + 0.5 * 32 + 0.25 * 64,
        0.125,
    )  # full window, ends on 7
    assert (t5["reward"][0], t5["discount"][0]) == (32 + 0.5 * 64, 0.25)  # m = 2, bootstrap gamma^2
    assert (t6["reward"][0], t6["discount"][0]) == (64, 0.5)  # m = 1
    np.testing.assert_array_equal(t5["next_obs"], stack(1, 5, 6, 7))
    np.testing.assert_array_equal(t6["next_obs"], stack(1, 5, 6, 7))


def test_nstep_return_near_termination_has_zero_discount():
    buf = make(nstep=3, discount=0.5)
    Player(buf).episode(ep=2, rewards=[1, 1, 1, 1, 1], terminated=True)  # steps 0..5, terminal at 5
    got = transitions(buf)
    assert sorted(got) == [(2, s) for s in range(5)]
    assert (got[(2, 1)]["reward"][0], got[(2, 1)]["discount"][0]) == (1.75, 0.125)  # reaches step 4
    assert (got[(2, 2)]["reward"][0], got[(2, 2)]["discount"][0]) == (1.75, 0.0)  # reaches the terminal
    assert (got[(2, 3)]["reward"][0], got[(2, 3)]["discount"][0]) == (1.5, 0.0)  # m = 2
    assert (got[(2, 4)]["reward"][0], got[(2, 4)]["discount"][0]) == (1.0, 0.0)  # m = 1
    np.testing.assert_array_equal(got[(2, 4)]["next_obs"], stack(2, 3, 4, 5))


def test_nstep_one_is_a_plain_transition():
    buf = make(nstep=1, discount=0.9)
    Player(buf).episode(ep=1, rewards=[3, 5], terminated=True)
    got = transitions(buf)
    assert got[(1, 0)]["reward"][0] == 3 and got[(1, 0)]["discount"][0] == np.float32(0.9)
    assert got[(1, 1)]["reward"][0] == 5 and got[(1, 1)]["discount"][0] == 0.0


# --------------------------------------------------------------------------------------------- frame stacks


def test_frame_stacks_repeat_the_first_frame_and_never_cross_episodes():
    buf = make(nstep=2, discount=0.5)
    p = Player(buf)
    p.episode(ep=1, rewards=[1, 1], truncated=True)  # steps 0..2
    p.episode(ep=2, rewards=[1, 1, 1, 1, 1])  # steps 0..5, still running
    got = transitions(buf)
    assert sorted(got) == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]
    np.testing.assert_array_equal(got[(1, 0)]["obs"], stack(1, 0, 0, 0))
    np.testing.assert_array_equal(got[(1, 1)]["next_obs"], stack(1, 0, 1, 2))  # truncated: m = 1
    np.testing.assert_array_equal(got[(2, 0)]["obs"], stack(2, 0, 0, 0))  # not episode 1's last frames
    np.testing.assert_array_equal(got[(2, 1)]["obs"], stack(2, 0, 0, 1))
    np.testing.assert_array_equal(got[(2, 0)]["next_obs"], stack(2, 0, 1, 2))
    np.testing.assert_array_equal(got[(2, 3)]["obs"], stack(2, 1, 2, 3))
    np.testing.assert_array_equal(got[(2, 3)]["next_obs"], stack(2, 3, 4, 5))


def test_stack_reaching_into_overwritten_steps_is_not_sampled():
    buf = make(capacity=5, nstep=1)
    p = Player(buf)
    p.first(ep=1)
    for _ in range(9):  # steps 0..9; the ring keeps 5..9
        p.add(1.0)
    # t needs frames t-2..t in the ring (t >= 7) and t+1 stored (t <= 8).
    assert buf.num_transitions() == 2
    assert sorted(transitions(buf)) == [(1, 7), (1, 8)]


def test_full_size_pixel_frames_and_batch_shapes():
    buf = make(nstep=3, frame_shape=(3, 84, 84), action_dim=6)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (12, 3, 84, 84), dtype=np.uint8)
    obs = np.concatenate([frames[0]] * 3)
    buf.add_first(obs)
    for i in range(1, 12):
        obs = np.concatenate([obs[3:], frames[i]])
        buf.add(np.full(6, i, np.float32), 0.0, obs, False, i == 11)
    batch = buf.sample(64)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == batch.next_obs.shape == (64, 9, 84, 84) and batch.obs.dtype == np.uint8
    assert batch.action.shape == (64, 6) and batch.action.dtype == np.float32
    assert batch.reward.shape == batch.discount.shape == (64, 1) and batch.reward.dtype == np.float32
    for i in range(64):
        t = int(batch.action[i, 0]) - 1  # action i+1 was taken at step t
        want = np.concatenate([frames[max(s, 0)] for s in (t - 2, t - 1, t)])
        np.testing.assert_array_equal(batch.obs[i], want)


# -------------------------------------------------------------------------------- ring: brute-force reference


def _ring_spec() -> EnvSpec:
    # Frames name their absolute step: (step // 256, step % 256).
    return EnvSpec((6, 1, 1), np.dtype(np.uint8), (2, 1, 1), 3, (1,), 1, 1000, True)


def _reference(steps: list[dict], capacity: int, nstep: int, gamma: float, running: bool) -> dict[int, tuple]:
    """All valid transitions by absolute start step, computed one at a time from the full history."""
    newest = len(steps) - 1
    oldest = max(0, len(steps) - capacity)
    out = {}
    for t in range(oldest, newest + 1):
        if steps[t]["end"]:
            continue
        start = steps[t]["start"]
        frames = [max(start, t - j) for j in (2, 1, 0)]
        if min(frames) < oldest:
            continue
        reward, m, terminal = 0.0, 0, False
        for j in range(1, nstep + 1):
            if t + j > newest:
                break
            reward += gamma ** (j - 1) * steps[t + j]["reward"]
            m = j
            if steps[t + j]["end"]:
                terminal = steps[t + j]["end"] == "terminated"
                break
        if m < nstep and not (steps[t + m]["end"] if m else False):
            assert running and steps[t]["start"] == steps[-1]["start"]
            continue  # incomplete window in the running episode
        nxt = [max(start, t + m - j) for j in (2, 1, 0)]
        out[t] = (frames, steps[t + 1]["action"], reward, 0.0 if terminal else gamma**m, nxt)
    return out


def test_ring_wraparound_matches_a_brute_force_reference():
    capacity, nstep, gamma, seed = 37, 3, 0.9, 0
    buf = NStepReplay(_ring_spec(), capacity=capacity, nstep=nstep, discount=gamma, seed=seed)
    rng = np.random.default_rng(seed)
    steps: list[dict] = []
    frames: deque[np.ndarray] = deque(maxlen=3)

    def code(t: int) -> np.ndarray:
        return np.array([t // 256, t % 256], np.uint8).reshape(2, 1, 1)

    def check(running: bool) -> None:
        ref = _reference(steps, capacity, nstep, gamma, running)
        assert buf.num_transitions() == len(ref)
        assert len(buf) == min(len(steps), capacity)
        if not ref:
            with pytest.raises(ConfigError, match="cannot sample"):
                buf.sample(8)
            return
        batch = buf.sample(256)
        t = batch.obs[:, -2, 0, 0].astype(int) * 256 + batch.obs[:, -1, 0, 0]
        assert set(t.tolist()) <= set(ref), "sampled an invalid transition"
        rows = [ref[i] for i in t.tolist()]
        np.testing.assert_array_equal(
            batch.obs, np.stack([np.concatenate([code(s) for s in r[0]]) for r in rows])
        )
        want_next = np.stack([np.concatenate([code(s) for s in r[4]]) for r in rows])
        np.testing.assert_array_equal(batch.next_obs, want_next)
        np.testing.assert_array_equal(batch.action[:, 0], [r[1] for r in rows])
        np.testing.assert_allclose(batch.reward[:, 0], [r[2] for r in rows], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batch.discount[:, 0], [r[3] for r in rows], rtol=1e-6)
        if len(ref) <= 20:
            assert set(t.tolist()) == set(ref), (
                "uniform sampling should hit every valid transition in 256 draws"
            )

    check(running=False)
    for _ in range(120):
        # Lengths above the capacity leave the ring holding part of a single episode.
        length = int(rng.choice([0, 1, 2, 3, 5, 8, 13, 45]))
        how = rng.choice(["terminated", "truncated", "end_episode", "implicit"])
        start = len(steps)
        frames.extend([code(start)] * 3)
        buf.add_first(np.concatenate(frames))
        steps.append({"start": start, "reward": 0.0, "action": 0.0, "end": None})
        for i in range(1, length + 1):
            t = len(steps)
            last = i == length
            reward = float(rng.normal())
            frames.append(code(t))
            end = how if last and how in ("terminated", "truncated") else None
            buf.add(
                np.array([t], np.float32),
                reward,
                np.concatenate(frames),
                end == "terminated",
                end == "truncated",
            )
            steps.append({"start": start, "reward": np.float32(reward), "action": t, "end": end})
            if rng.random() < 0.15:
                check(running=end is None)
        if length == 0 or how in ("end_episode", "implicit"):
            steps[-1]["end"] = "truncated"
            if how == "implicit":
                continue  # the next add_first ends it as a truncation
            buf.end_episode()
        check(running=False)
    assert len(steps) > 5 * capacity


# ---------------------------------------------------------------------------------------------------- states


def test_states_mode_uses_the_whole_observation():
    spec = EnvSpec((4,), np.dtype(np.float32), (4,), 1, (2,), 1, 1000, False)
    buf = NStepReplay(spec, capacity=10, nstep=2, discount=0.5, seed=0)
    obs = [np.arange(4, dtype=np.float32) + 10 * i for i in range(4)]
    buf.add_first(obs[0])
    buf.add(np.array([1, -1], np.float32), 1.0, obs[1], False, False)
    buf.add(np.array([2, -2], np.float32), 2.0, obs[2], False, False)
    buf.add(np.array([3, -3], np.float32), 4.0, obs[3], True, False)
    assert buf.num_transitions() == 3
    batch = buf.sample(200)
    assert batch.obs.shape == (200, 4) and batch.obs.dtype == np.float32
    for i in range(200):
        t = int(batch.obs[i, 0]) // 10
        np.testing.assert_array_equal(batch.obs[i], obs[t])
        np.testing.assert_array_equal(batch.action[i], [t + 1, -(t + 1)])
        want = {0: (1 + 0.5 * 2, 0.25, 2), 1: (2 + 0.5 * 4, 0.0, 3), 2: (4.0, 0.0, 3)}[t]
        assert (batch.reward[i, 0], batch.discount[i, 0]) == want[:2]
        np.testing.assert_array_equal(batch.next_obs[i], obs[want[2]])


# ------------------------------------------------------------------------------------------------ end_episode


def test_end_episode_marks_a_truncation_and_is_idempotent():
    buf = make(nstep=3, discount=0.5)
    p = Player(buf)
    p.first(ep=1)
    for r in [1, 2, 4, 8]:  # steps 0..4
        p.add(r)
    assert buf.num_transitions() == 2  # t = 0, 1
    buf.end_episode()
    assert buf.num_transitions() == 4  # t = 0..3; step 4 now ends the episode
    got = transitions(buf)
    assert (got[(1, 3)]["reward"][0], got[(1, 3)]["discount"][0]) == (8, 0.5)  # bootstraps from step 4
    assert (got[(1, 2)]["reward"][0], got[(1, 2)]["discount"][0]) == (4 + 0.5 * 8, 0.25)
    buf.end_episode()
    assert buf.num_transitions() == 4 and len(buf) == 5
    with pytest.raises(RuntimeError, match="add_first"):
        buf.add(np.zeros(1, np.float32), 0.0, stack(1, 3, 4, 5), False, False)


def test_add_first_ends_an_unfinished_episode_as_truncation():
    buf = make(nstep=3, discount=0.5)
    p = Player(buf)
    p.episode(ep=1, rewards=[1, 2])  # running, steps 0..2: nothing complete
    assert buf.num_transitions() == 0
    p.first(ep=2)
    got = transitions(buf)
    assert sorted(got) == [(1, 0), (1, 1)]
    assert (got[(1, 0)]["reward"][0], got[(1, 0)]["discount"][0]) == (2.0, 0.25)


def test_sampling_an_empty_buffer_raises_config_error():
    buf = make(nstep=3)
    with pytest.raises(ConfigError, match="cannot sample"):
        buf.sample(4)
    Player(buf).episode(ep=1, rewards=[1, 1])
    with pytest.raises(ConfigError, match="raise num_seed_frames"):
        buf.sample(4)


# ----------------------------------------------------------------------------------------------- save / load


def _fill(buf: NStepReplay, episodes: int, seed: int = 3) -> Player:
    rng = np.random.default_rng(seed)
    p = Player(buf)
    for ep in range(episodes):
        p.episode(ep, rng.normal(size=int(rng.integers(1, 9))).tolist(), terminated=bool(ep % 2))
    p.first(ep=episodes)
    p.add(0.5)  # leave an episode running
    return p


def _assert_batches_equal(a: Batch, b: Batch) -> None:
    for f in ("obs", "action", "reward", "discount", "next_obs"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    buf = make(capacity=30, seed=5)
    p = _fill(buf, episodes=12)  # wraps the 30-step ring
    buf.sample(16)  # advance the RNG before saving
    buf.save(tmp_path)
    assert {f.name for f in tmp_path.iterdir()} >= {"replay.json", "frame.npy", "end.npy"}
    restored = make(capacity=30, seed=99)
    restored.load(tmp_path)
    assert len(restored) == len(buf) and restored.num_transitions() == buf.num_transitions()
    for _ in range(3):
        _assert_batches_equal(buf.sample(32), restored.sample(32))
    # Both continue the running episode identically.
    q = Player(restored)
    q.frames, q.ep, q.step = deque(p.frames, maxlen=K), p.ep, p.step
    for player in (p, q):
        player.add(1.0)
        player.add(2.0, terminated=True)
    _assert_batches_equal(buf.sample(64), restored.sample(64))


def test_load_mismatch_names_the_field_and_the_fix(tmp_path):
    buf = make(capacity=30)
    _fill(buf, episodes=3)
    buf.save(tmp_path)
    with pytest.raises(CheckpointError) as err:
        make(capacity=40).load(tmp_path)
    msg = str(err.value)
    assert "capacity=30" in msg and "40" in msg and "empty replay" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="action_shape"):
        make(capacity=30, action_dim=2).load(tmp_path)
    with pytest.raises(CheckpointError, match=r"replay\.json missing"):
        make(capacity=30).load(tmp_path / "nowhere")
    np.save(tmp_path / "reward.npy", np.zeros(3, np.float64))
    with pytest.raises(CheckpointError, match=r"reward\.npy holds float64"):
        make(capacity=30).load(tmp_path)


# ------------------------------------------------------------------------------- checkpoints as segments


def _ring(buf: NStepReplay) -> dict[str, object]:
    """Everything a sample or a later `add` depends on: the filled slots and the counters."""
    n = len(buf)
    arrays = {name: getattr(buf, f"_{name}")[:n].copy() for name in ("frame", "action", "reward", "end",
                                                                      "episode_start")}  # fmt: skip
    counters = (buf._total, buf._current_start, buf._ended, buf._num_ends, buf.num_transitions())
    return {"counters": counters, "rng": buf._rng.bit_generator.state, **arrays}


def _assert_same_ring(a: NStepReplay, b: NStepReplay) -> None:
    ra, rb = _ring(a), _ring(b)
    assert ra.keys() == rb.keys()
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)  # type: ignore[arg-type]


def _segment_files(directory) -> set[str]:
    return {f.name for f in directory.iterdir() if f.name.endswith(".npy")}


def _checkpointer(tmp_path, keep=2):
    from common.checkpoint import Checkpointer

    return Checkpointer(tmp_path, keep=keep)


def test_a_resume_from_segments_restores_the_identical_ring(tmp_path):
    buf, store = make(capacity=30, seed=5), tmp_path / "store"
    buf.segment_store = store
    p = _fill(buf, episodes=5)
    buf.save(tmp_path / "a")
    p.add(1.0)
    buf.end_episode()  # a step already in segment a changes: the next manifest patches it
    p = _fill(buf, episodes=9, seed=4)  # wraps the 30-step ring: a's oldest steps fall out
    buf.sample(16)
    buf.save(tmp_path / "b")
    restored = make(capacity=30, seed=99)
    restored.load(tmp_path / "b")
    _assert_same_ring(buf, restored)
    whole = make(capacity=30, seed=98)  # the segments hold what a whole-buffer save holds
    buf.segment_store = None
    buf.save(tmp_path / "whole")
    whole.load(tmp_path / "whole")
    _assert_same_ring(whole, restored)
    q = Player(restored)  # both continue identically
    q.frames, q.ep, q.step = deque(p.frames, maxlen=K), p.ep, p.step
    for player in (p, q):
        player.add(1.0, terminated=True)
    _assert_batches_equal(buf.sample(64), restored.sample(64))


def test_a_second_checkpoint_writes_only_the_new_segment(tmp_path):
    checkpoints, buf = _checkpointer(tmp_path), make(capacity=100)
    p = _fill(buf, episodes=4)
    first = checkpoints.save(1, {}, {}, buf)
    store = checkpoints.dir / "replay_segments"
    before = {f.name: f.stat().st_ino for f in store.iterdir()}
    assert len(before) == 5 and _segment_files(first / "replay") == set(before)
    total = buf._total
    for _ in range(7):
        p.add(0.5)
    second = checkpoints.save(2, {}, {}, buf)
    new = {f for f in store.iterdir() if f.name not in before}
    assert len(new) == 5  # one file per array, holding just the 7 new steps
    assert all(np.load(f).shape[0] == 7 and f.name.startswith(f"{total:012d}-{total + 7:012d}") for f in new)
    for name, inode in before.items():  # the old segment is linked, not written again
        assert (second / "replay" / name).stat().st_ino == inode == (first / "replay" / name).stat().st_ino
    restored = make(capacity=100)
    checkpoints.load(second, {}, restored)
    _assert_same_ring(buf, restored)


def test_gc_removes_segments_no_kept_checkpoint_references(tmp_path):
    checkpoints, buf = _checkpointer(tmp_path, keep=2), make(capacity=20)
    p = _fill(buf, episodes=1)
    for frame in range(1, 8):
        for _ in range(9):  # 9 new steps per checkpoint in a 20-step ring: old segments fall out
            p.add(1.0)
        checkpoints.save(frame, {}, {}, buf)
    kept = sorted(checkpoints.dir.glob("frame_*"))
    assert [c.name for c in kept] == ["frame_0000000006", "frame_0000000007"]
    referenced = set().union(*(_segment_files(c / "replay") for c in kept))
    assert _segment_files(checkpoints.dir / "replay_segments") == referenced
    assert len(referenced) < 5 * 7  # earlier segments were deleted
    for c in kept:
        for seg in json.loads((c / "replay" / "replay.json").read_text())["segments"]:
            assert seg["end"] > json.loads((c / "replay" / "replay.json").read_text())["total"] - 20
    restored = make(capacity=20)
    checkpoints.load(kept[-1], {}, restored)
    _assert_same_ring(buf, restored)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except OSError` cleans up."""


def test_a_kill_while_writing_a_segment_leaves_latest_intact(tmp_path, monkeypatch):
    import common.buffers.replay as replay_module

    checkpoints, buf = _checkpointer(tmp_path), make(capacity=50)
    p = _fill(buf, episodes=3)
    checkpoints.save(1, {}, {}, buf)
    expected = make(capacity=50)
    checkpoints.load(checkpoints.latest(), {}, expected)
    for _ in range(4):
        p.add(1.0)

    def killed(self, start, end):  # the first segment file of checkpoint 2 has its header only
        raise _Killed

    with monkeypatch.context() as m:
        m.setattr(replay_module.NStepReplay, "_slot_runs", killed)
        with pytest.raises(_Killed):
            checkpoints.save(2, {}, {}, buf)
    store = checkpoints.dir / "replay_segments"
    assert any(f.name.endswith(".tmp") for f in store.iterdir())  # the half-written file is there
    assert checkpoints.latest().name == "frame_0000000001"
    after_kill = make(capacity=50)
    checkpoints.load(checkpoints.latest(), {}, after_kill)
    _assert_same_ring(expected, after_kill)

    checkpoints.save(2, {}, {}, buf)  # the next save completes, and its clean-up removes the debris
    assert not any(f.name.endswith(".tmp") for f in store.iterdir())
    restored = make(capacity=50)
    checkpoints.load(checkpoints.latest(), {}, restored)
    _assert_same_ring(buf, restored)


# --------------------------------------------------------------------------------------- config and memory


@pytest.mark.parametrize(
    ("capacity", "nstep", "discount", "match"),
    [(1, 3, 0.99, "capacity"), (10, 0, 0.99, "nstep"), (10, 3, 0.0, "discount"), (10, 3, 1.01, "discount")],
)
def test_bad_settings_raise_config_error(capacity, nstep, discount, match):
    with pytest.raises(ConfigError, match=match):
        make(capacity=capacity, nstep=nstep, discount=discount)


def test_pixel_memory_is_a_third_of_stacked_storage():
    buf = make(capacity=10, frame_shape=(3, 84, 84), action_dim=6)
    per_step = buf.nbytes / 10
    stacked = 9 * 84 * 84 + 4 * 6 + 4 + 4  # DrQ-v2: stacked obs + action + reward + discount
    assert per_step <= 0.35 * stacked


def test_one_step_transitions_export_in_collection_order() -> None:
    spec = EnvSpec((2,), np.dtype(np.float32), (2,), 1, (1,), 1, 10, False)
    replay = NStepReplay(spec, capacity=100, nstep=3, discount=0.99, seed=0)
    o = lambda v: np.full(2, v, np.float32)  # noqa: E731
    a = lambda v: np.full(1, v, np.float32)  # noqa: E731
    replay.add_first(o(0))
    replay.add(a(0.1), 1.0, o(1), False, False)
    replay.add(a(0.2), 2.0, o(2), True, False)  # terminal
    replay.add_first(o(10))
    replay.add(a(0.3), 3.0, o(11), False, False)
    replay.add_first(o(20))  # the previous episode was cut: a truncation
    replay.add(a(0.4), 4.0, o(21), False, False)
    t = replay.one_step_transitions()
    assert t["observations"][:, 0].tolist() == [0, 1, 10, 20]
    assert t["next_observations"][:, 0].tolist() == [1, 2, 11, 21]
    assert t["actions"][:, 0].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert t["rewards"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert t["terminations"].tolist() == [False, True, False, False]
    assert t["truncations"].tolist() == [False, False, True, False]
    assert replay.one_step_transitions(max_transitions=3)["rewards"].tolist() == [1.0, 2.0, 3.0]


def test_one_step_transitions_refuses_an_overwritten_prefix() -> None:
    spec = EnvSpec((2,), np.dtype(np.float32), (2,), 1, (1,), 1, 10, False)
    replay = NStepReplay(spec, capacity=4, nstep=1, discount=0.99, seed=0)
    replay.add_first(np.zeros(2, np.float32))
    for i in range(6):
        replay.add(np.zeros(1, np.float32), float(i), np.full(2, i, np.float32), False, False)
    assert replay.one_step_transitions()["rewards"].tolist() == [3.0, 4.0, 5.0]  # the ring keeps 4 steps
    with pytest.raises(ConfigError, match="overwritten its first 3 steps"):
        replay.one_step_transitions(max_transitions=5)
