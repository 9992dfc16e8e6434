"""End-to-end runs through `run.py`: smoke runs, kill-and-resume equality, and bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.logger import read_metrics
from tests.conftest import ROOT, assert_kill_and_resume_identical, metric_rows, run_cli

SMOKE = ("paper=drqv2", "debug=smoke")


# dog repeats cheetah_run's checks on the slowest task (tests/test_drm.py smokes DrM on dog): slow only
@pytest.mark.parametrize("env", ["cheetah_run", pytest.param("dog", marks=pytest.mark.slow)])
def test_smoke_run_leaves_a_complete_run_directory(env, tmp_path, request):
    if env == "cheetah_run":  # the module's shared run is this very command
        run_dir = request.getfixturevalue("finished_run")
        stderr = (run_dir.parent / "stderr.txt").read_text()
    else:
        run_dir = tmp_path / "run"
        stderr = run_cli(*SMOKE, f"env={env}", f"hydra.run.dir={run_dir}", check=True, timeout=240).stderr
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.json").exists()
    evals = read_metrics(run_dir / "eval.jsonl")
    assert len(evals) >= 2 and evals[0]["frame"] == 0 and evals[-1]["frame"] == 400
    train = read_metrics(run_dir / "train.jsonl")
    assert all(row["episode_length"] == 50 for row in train)  # max_episode_frames 100 / repeat 2
    assert [row["frame"] for row in train] == [100, 200, 300, 400]  # every episode, the last one included
    learned = [row for row in train if row["updates"] > 0]  # updates happened and were logged
    assert learned and all({"critic_loss", "actor_loss", "actor_stddev"} <= set(row) for row in learned)
    assert list((run_dir / "checkpoints").glob("*/replay")), "the replay is checkpointed"
    # 200 agent steps; updates from step 50 (seed_frames 100 / repeat 2), every 2 steps: 75 updates
    assert train[-1]["updates"] == 75
    assert (run_dir / "checkpoints" / "latest").exists()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["score"] == evals[-1]["episode_return"]
    assert "frame" in stderr  # the progress bar


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    args = (*SMOKE, "env=cheetah_run", "paper.train.num_frames=400", "checkpoint.every_frames=200")
    assert_kill_and_resume_identical(args, tmp_path)


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run.py"),
            *SMOKE,
            "env=cheetah_run",
            "paper.train.num_frames=100000",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "train.jsonl").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and f"resume={run_dir}" in err
    assert json.loads((run_dir / "status.json").read_text())["state"] == "preempted"
    assert json.loads((_latest(run_dir) / "meta.json").read_text())["frame"] > 0
    # resume uses the saved (long) budget: check that it continues from there and can be stopped again
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), f"resume={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    frames = [json.loads(line)["frame"] for line in (run_dir / "train.jsonl").read_text().splitlines()]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing lost


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("paper.train.num_frames=0", "error: paper.train.num_frames=0 must be positive"),
        ("paper.train.num_frames=-5", "error: paper.train.num_frames=-5 must be positive"),
        ("paper.buffer.batch_size=5000", "error: paper.buffer.batch_size=5000 exceeds paper.buffer.capacity"),
    ],
)
def test_impossible_sizes(override, message, tmp_path):
    proc = run_cli(*SMOKE, "env=cheetah_run", override, f"hydra.run.dir={tmp_path}/r")
    assert _error_line(proc).startswith(message)
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_unknown_camera(tmp_path):
    proc = run_cli(*SMOKE, "env=cheetah_run", "env.camera=17", f"hydra.run.dir={tmp_path}/r")
    line = _error_line(proc)
    assert "camera" in line and "17" in line


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished DrQ-v2 smoke run on cheetah_run per test process: tests read it or copy it."""
    run_dir = tmp_path_factory.mktemp("done") / "run"
    proc = run_cli(*SMOKE, "env=cheetah_run", f"hydra.run.dir={run_dir}", check=True, timeout=240)
    (run_dir.parent / "stderr.txt").write_text(proc.stderr)
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def _latest(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()


def test_corrupt_checkpoint(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    state = _latest(run_dir) / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    line = _error_line(run_cli(f"resume={run_dir}"))
    assert "corrupt" in line and "state.pt" in line
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "status.json"}
    assert all(before[p] == data for p, data in after.items()), "a failed resume must not change the run"


def test_foreign_checkpoint(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    meta_path = _latest(run_dir) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "paper": "sac"}))
    line = _error_line(run_cli(f"resume={run_dir}"))
    assert "written by paper='sac', not 'drqv2'" in line
    meta_path.write_text("{}")
    assert "format" in _error_line(run_cli(f"resume={run_dir}"))


def test_resume_with_another_paper(finished_run, tmp_path):
    line = _error_line(run_cli(f"resume={finished_run}", "paper=drm"))
    assert "made with paper=drqv2, not paper=drm" in line


def test_resume_rejects_other_overrides_and_missing_dirs(finished_run, tmp_path):
    assert "remove 'seed=3'" in _error_line(run_cli(f"resume={finished_run}", "seed=3"))
    assert "no config.yaml" in _error_line(run_cli(f"resume={tmp_path}/nothing"))


def test_reused_run_directory_is_not_overwritten(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    before = (run_dir / "eval.jsonl").read_bytes()
    line = _error_line(run_cli(*SMOKE, "env=cheetah_run", "seed=7", f"hydra.run.dir={run_dir}"))
    assert "already holds another run" in line
    assert (run_dir / "eval.jsonl").read_bytes() == before


def test_a_run_killed_before_its_first_checkpoint_starts_again_in_place(finished_run, tmp_path):
    # A requeued SLURM job re-runs the same command in the same directory: with no checkpoint yet there is
    # nothing to resume, so the run starts again there (not an error), without duplicated metric rows.
    run_dir = _copy(finished_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "eval.jsonl").write_text((run_dir / "eval.jsonl").read_text().splitlines()[0] + "\n")
    run_cli(*SMOKE, "env=cheetah_run", f"hydra.run.dir={run_dir}", check=True)
    assert metric_rows(run_dir / "eval.jsonl") == metric_rows(finished_run / "eval.jsonl")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_paper_and_env_must_be_chosen():
    line = _error_line(run_cli("env=cheetah_run"))
    assert line.startswith("error: choose a paper: paper=<name>, one of ") and "drqv2" in line
    assert _error_line(run_cli("paper=sac")).startswith("error: choose an env: env=<name>, one of ")


def test_a_multirun_can_sweep_papers(tmp_path):
    # the defaults leave paper/env null (not ???) so Hydra can compose the sweep before choosing each job's
    sweep = tmp_path / "sweep"
    run_cli(
        "-m", "paper=sac,stream_ac", "env=pendulum", "debug=smoke", f"hydra.sweep.dir={sweep}", check=True
    )
    done = sorted(p.name for p in sweep.iterdir() if (p / "status.json").exists())
    assert done == ["0_sac_pendulum_s1", "1_stream_ac_pendulum_s1"]
    for name in done:
        assert json.loads((sweep / name / "status.json").read_text())["state"] == "finished"


def test_resuming_a_finished_run_changes_nothing(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    before = metric_rows(run_dir / "eval.jsonl")
    run_cli(f"resume={run_dir}", check=True)
    assert metric_rows(run_dir / "eval.jsonl") == before


def test_sigterm_during_a_long_evaluation_exits_promptly(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *SMOKE, "env=cheetah_run", "paper.train.eval_episodes=100000",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run_dir / "status.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(3)  # inside the frame-0 evaluation, which would take many minutes
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads((run_dir / "status.json").read_text())["state"] == "preempted"
    assert not (run_dir / "eval.jsonl").exists() or not read_metrics(run_dir / "eval.jsonl")
    assert (run_dir / "checkpoints" / "latest").exists()


def test_wandb_offline_mirror_lives_in_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    home = tmp_path / "home"  # no API key anywhere: `auto` must choose offline
    env = {"WANDB_MODE": None, "HOME": str(home), "WANDB_CACHE_DIR": str(tmp_path / "cache")}
    run_cli(*SMOKE, "env=cheetah_run", "logger.wandb.enabled=true", "paper.train.num_frames=200",
            f"hydra.run.dir={run_dir}", env=env, check=True)  # fmt: skip
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    assert read_metrics(run_dir / "eval.jsonl")  # the files stay the source of truth


def test_update_to_data_ratio(tmp_path):
    # the shared replay loop on a cheap state task: SAC smoke on pendulum steps 400 times (action repeat 1)
    # and updates on every step from step 100 (seed_frames): 300 steps x 3 updates
    run_dir = tmp_path / "run"
    run_cli("paper=sac", "env=pendulum", "debug=smoke", "paper.train.updates_per_step=3",
            f"hydra.run.dir={run_dir}", check=True)  # fmt: skip
    assert read_metrics(run_dir / "train.jsonl")[-1]["updates"] == 300 * 3
