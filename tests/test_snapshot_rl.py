"""Snapshot RL (S3RL): clustering, snapshot sampling, exact starts, truncation, teacher checks, a smoke run.

The teacher is a `paper=td3 env=hopper debug=smoke` run made once per module in a temp dir (~8 s)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from common.envs import make_env
from common.envs.reset_state import snapshot
from common.envs.snapshot import SnapshotSet, SnapshotStarts
from common.errors import CheckpointError, ConfigError, EnvError
from common.registry import CONF_DIR
from papers.snapshot_rl.loop import train_online
from papers.snapshot_rl.teacher import (
    Rollout,
    best_episodes,
    cluster_values,
    find_teacher,
    roll_out,
    snapshot_set,
)
from tests.conftest import assert_kill_and_resume_identical, run_cli


def gym_env(env_id: str, seed: int = 0, limit: int = 300) -> Any:
    cfg = {"suite": "gym", "name": env_id, "id": env_id, "camera": None, "max_episode_frames": limit}
    return make_env(cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=seed)


def states_of(env_id: str, n: int, seed: int = 0) -> tuple[SnapshotSet, list[np.ndarray]]:
    """`n` states of one random-action episode (one cluster each) and the observation at each."""
    env, rng = gym_env(env_id, seed), np.random.default_rng(seed)
    ts = env.reset()
    qpos, qvel, obs = [], [], []
    for _ in range(n):
        ts = env.step(rng.uniform(-1, 1, env.spec.action_shape).astype(np.float32))
        snap = snapshot(env)
        qpos.append(snap.qpos)
        qvel.append(snap.qvel)
        obs.append(ts.obs)
    env.close()
    return SnapshotSet(np.stack(qpos), np.stack(qvel), np.arange(n)), obs


def starts(env_id: str, snaps: SnapshotSet, seed: int = 0, **kw: int) -> SnapshotStarts:
    sizes = {"truncate_steps": 100, "snapshot_steps": 100_000, **kw}
    return SnapshotStarts(gym_env(env_id, seed), lambda: snaps, seed=seed, **sizes)


# --- clustering and selection -----------------------------------------------------------------------------
def test_kmeans_on_values_groups_near_values_and_is_deterministic() -> None:
    values = np.array([0.0, 10.0, 0.2, 20.0, 10.3, 0.1, 20.2])
    labels = cluster_values(values, 3)
    groups = {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)}
    assert groups == {frozenset({0, 2, 5}), frozenset({1, 4}), frozenset({3, 6})}
    np.testing.assert_array_equal(cluster_values(values, 3), labels)  # the same labels every time
    assert len(np.unique(cluster_values(values[:2], 6))) == 2  # k is capped at the number of states


def test_best_episodes_keeps_the_states_of_the_highest_returns() -> None:
    rollout = Rollout(
        qpos=np.zeros((6, 1)),
        qvel=np.zeros((6, 1)),
        value=np.zeros(6),
        episode=np.array([0, 0, 1, 1, 2, 2]),
        returns=np.array([5.0, 9.0, 7.0]),
    )
    np.testing.assert_array_equal(best_episodes(rollout, 2), [2, 3, 4, 5])
    np.testing.assert_array_equal(best_episodes(rollout, 10), np.arange(6))


def test_snapshot_sampling_is_seeded_and_uniform_over_clusters_first() -> None:
    snaps, _ = states_of("HalfCheetah-v5", 10)
    # cluster 0 holds one state, cluster 1 the other nine: a cluster is drawn first, so state 0 gets ~1/2
    snaps = SnapshotSet(snaps.qpos, snaps.qvel, np.array([0] + [1] * 9))

    def picks(seed: int) -> list[int]:
        env = starts("HalfCheetah-v5", snaps, seed)
        out = [env.reset().info["snapshot_index"] for _ in range(400)]
        env.close()
        return out

    a = picks(3)
    assert a == picks(3) and a != picks(4)
    share = a.count(0) / len(a)
    assert 0.43 < share < 0.57, share  # 1/2 +- 3 sd (a state-uniform draw would give 1/10)
    assert set(a) == set(range(10))


# --- the environment change ------------------------------------------------------------------------------
def test_a_snapshot_start_restores_the_exact_teacher_state() -> None:
    rng = np.random.default_rng(1)
    original = gym_env("Hopper-v5", seed=0)
    original.reset()
    for _ in range(8):
        ts = original.step(rng.uniform(-1, 1, 3).astype(np.float32))
    snap = snapshot(original)
    env = starts("Hopper-v5", SnapshotSet(snap.qpos[None], snap.qvel[None], np.zeros(1)), seed=5)
    first = env.reset()
    np.testing.assert_array_equal(first.obs, ts.obs)
    assert first.info["snapshot"] and first.episode_length == 0
    for _ in range(5):  # the same actions: the same next observations and rewards
        a = rng.uniform(-1, 1, 3).astype(np.float32)
        x, y = original.step(a), env.step(a)
        np.testing.assert_array_equal(x.obs, y.obs)
        assert x.reward == y.reward and x.terminated == y.terminated
        if x.done:
            break
    original.close()
    env.close()


def test_snapshot_episodes_are_truncated_after_truncate_steps_and_at_the_phase_end() -> None:
    snaps, _ = states_of("HalfCheetah-v5", 3)  # HalfCheetah never terminates: every end is a truncation
    env = starts("HalfCheetah-v5", snaps, truncate_steps=5, snapshot_steps=7)
    zero = np.zeros(6, np.float32)

    def episode() -> list[Any]:
        ts, steps = env.reset(), []
        first = ts
        while not ts.done:
            ts = env.step(zero)
            steps.append(ts)
        return [first, *steps]

    one = episode()  # from a snapshot: truncated 5 steps after its start (S3RL's truncate-step)
    assert one[0].info["snapshot"] and len(one) - 1 == 5
    assert one[-1].truncated and not one[-1].terminated and not any(s.done for s in one[1:-1])
    two = episode()  # from a snapshot: the phase (7 steps) ends 2 steps in, and the episode with it
    assert two[0].info["snapshot"] and len(two) - 1 == 2 and two[-1].truncated
    three = episode()  # the env's own start, its own time limit (300)
    assert "snapshot_index" not in three[0].info and not three[-1].info["snapshot"]
    assert len(three) - 1 == 300
    env.close()


def test_resume_continues_the_schedule_and_the_episode_without_the_teacher() -> None:
    snaps, _ = states_of("HalfCheetah-v5", 4)
    env = starts("HalfCheetah-v5", snaps, truncate_steps=6, snapshot_steps=30)
    zero = np.zeros(6, np.float32)
    env.reset()
    for _ in range(3):
        env.step(zero)
    rng_state, episode = env.get_rng_state(), env.get_state()
    assert episode is not None

    def teacher_gone() -> SnapshotSet:
        raise AssertionError("a resumed run reads its snapshots from the checkpoint")

    resumed = SnapshotStarts(
        gym_env("HalfCheetah-v5", 99), teacher_gone, truncate_steps=6, snapshot_steps=30, seed=99
    )
    resumed.set_rng_state(torch.load(_saved(rng_state), weights_only=True))
    resumed.set_state(episode)
    # the rest of this episode, then further snapshot starts and, after 30 steps, the env's own: identical
    for a, b in zip(_play(env, 40), _play(resumed, 40), strict=True):
        np.testing.assert_array_equal(a.obs, b.obs)
        assert (a.truncated, a.info.get("snapshot_index")) == (b.truncated, b.info.get("snapshot_index"))


def _play(env: SnapshotStarts, steps: int) -> list[Any]:
    """`steps` zero-action steps, each followed by a reset when its episode ended; every Step returned."""
    out = []
    for _ in range(steps):
        out.append(env.step(np.zeros(env.spec.action_shape, np.float32)))
        if out[-1].done:
            out.append(env.reset())
    return out


def _saved(state: dict[str, Any]) -> Any:
    """`state` through a checkpoint's file format (torch.save, loaded with weights_only=True)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# --- the teacher ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("teacher") / "td3"
    run_cli("paper=td3", "env=hopper", "debug=smoke", f"hydra.run.dir={run_dir}", check=True)
    return run_dir


def student_cfg(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["paper=snapshot_rl", "debug=smoke", *overrides])


def test_the_teacher_snapshots_are_deterministic_states_of_the_env(teacher: Path) -> None:
    cfg = student_cfg("env=hopper", f"paper.teacher={teacher}")
    snaps = snapshot_set(cfg)
    assert snaps.qpos.shape[1:] == (6,) and snaps.qvel.shape[1:] == (6,)  # Hopper's qpos and qvel
    assert 1 <= len(snaps.members()) <= 6
    found = find_teacher(cfg)
    assert found.frame == 400  # the latest checkpoint
    one, two = roll_out(found, 3, 10, seed=1), roll_out(found, 3, 10, seed=1)
    for key in ("qpos", "qvel", "value", "episode", "returns"):
        np.testing.assert_array_equal(getattr(one, key), getattr(two, key))
    assert len(one.returns) == 3 and np.all(np.diff(one.episode) >= 0)
    earlier = student_cfg("env=hopper", f"paper.teacher={teacher}", "paper.teacher_frame=201")
    assert find_teacher(earlier).frame == 201


def test_bad_teachers_are_refused_in_one_line(teacher: Path, tmp_path: Path) -> None:
    def refused(*overrides: str) -> str:
        with pytest.raises((ConfigError, CheckpointError, EnvError)) as err:
            train_online.validate(student_cfg(*overrides))  # type: ignore[attr-defined]
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "python run.py paper=td3 env=hopper" in refused("env=hopper")  # no teacher: how to make one
    assert "not a run directory" in refused("env=hopper", f"paper.teacher={tmp_path}")
    assert "trained on env hopper, not walker2d" in refused("env=walker2d", f"paper.teacher={teacher}")
    bare = tmp_path / "bare"  # a run directory without checkpoints
    bare.mkdir()
    shutil.copy(teacher / "config.yaml", bare / "config.yaml")
    assert "has no checkpoint yet" in refused("env=hopper", f"paper.teacher={bare}")
    assert "keeps frames [201, 400]" in refused(
        "env=hopper", f"paper.teacher={teacher}", "paper.teacher_frame=300"
    )
    ppo = tmp_path / "ppo"  # a run of another algorithm
    ppo.mkdir()
    saved = yaml.safe_load((teacher / "config.yaml").read_text())
    saved["paper"]["entry"] = "papers.ppo.agent.PPOAgent"
    (ppo / "config.yaml").write_text(yaml.safe_dump(saved))
    assert "must be a TD3 or SAC run" in refused("env=hopper", f"paper.teacher={ppo}")
    assert "needs a MuJoCo task" in refused("env=pendulum", f"paper.teacher={teacher}")


def test_a_command_without_a_teacher_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("paper=snapshot_rl", "env=hopper", "debug=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "python run.py paper=td3 env=hopper" in lines[0], proc.stderr[-2000:]
    assert not any((run_dir / name).exists() for name in ("train.jsonl", "eval.jsonl", "checkpoints"))


@pytest.mark.parametrize("student", ["td3", "sac", "ppo"])
def test_smoke_run_of_each_student_with_a_td3_teacher(teacher: Path, tmp_path: Path, student: str) -> None:
    run_dir = tmp_path / "student"
    run_cli(
        "paper=snapshot_rl",
        f"student@paper={student}",
        "env=hopper",
        "debug=smoke",
        f"paper.teacher={teacher}",
        f"hydra.run.dir={run_dir}",
        check=True,
        timeout=180,
    )
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["paper"]
    assert saved["entry"] == f"papers.{student}.agent.{student.upper()}Agent"  # the student's own agent
    assert saved["name"] == "snapshot_rl" and saved["snapshot"]["num_clusters"] == 6
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert evals and evals[0]["frame"] == 0 and evals[-1]["frame"] == 400
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(run_dir / "checkpoints" / latest / "state.pt", weights_only=True)
    # the (first) training env's: snapshot starts throughout (400 < 100k steps)
    assert state["env_rng"]["snapshot_steps_taken"] > 0
    assert state["env_rng"]["snapshots"]["qpos"].shape[1] == 6  # Hopper's qpos: the teacher's states, kept
    assert "snapshots" not in state["eval_env_rng"]  # evaluation starts from the env's own starts


def test_a_killed_student_resumes_exactly_without_the_teacher(teacher: Path, tmp_path: Path) -> None:
    """A TD3 student killed after its first checkpoint resumes to an uninterrupted run's rows and score: the
    snapshot set, the start schedule and the running snapshot episode come back from the checkpoint."""
    args = ("paper=snapshot_rl", "env=hopper", "debug=smoke", f"paper.teacher={teacher}",
            "checkpoint.every_frames=120")  # fmt: skip
    assert_kill_and_resume_identical(args, tmp_path)
