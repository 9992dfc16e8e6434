"""Faults a cluster or a mistake injects: divergence, a full disk, a read-only or busy run directory, an
edited or foreign config, a run killed before its first checkpoint. Each fails loudly in one line and
leaves the run's record true."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import common.offline.loop
from common import launch
from common.checkpoint import Checkpointer
from common.divergence import DivergenceWatch, first_nonfinite, learning_rate_knobs
from common.errors import CheckpointError, ConfigError, Diverged, RunDirError
from common.logger import read_metrics
from common.registry import CONF_DIR, ROOT, import_entry, import_loop
from common.runtime import RunLock, config_hash
from tests.conftest import pendulum_dataset, run_cli


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["debug=smoke", "logger.progress=false", *overrides])


SAC = ("paper=sac", "env=pendulum", "paper.train.num_frames=200")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished SAC smoke run (checkpoints at frames 100 and 200), made in this process."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    launch.start(_compose(*SAC, "checkpoint.every_frames=100"), run_dir)
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _files(run_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != RunLock.FILE}


def _latest(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest").read_text().strip()


def _all_finite_checkpoints(run_dir: Path) -> None:
    for path in (run_dir / "checkpoints").glob("frame_*"):
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        assert first_nonfinite(state["agent"]) is None, path


def _rows_finite(path: Path) -> None:
    for row in read_metrics(path) if path.exists() else []:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row


# ------------------------------------------------------------------------------------------- 1 divergence


def test_first_nonfinite_names_the_tensor():
    state = {"critic": {"w": torch.ones(2), "b": torch.tensor([0.0, float("nan")])}, "n": torch.tensor(3)}
    assert first_nonfinite(state) == "critic.b"
    assert first_nonfinite({"opt": [{"lr": 1e-3}, {"v": np.array([np.inf])}]}) == "opt.1.v"
    assert first_nonfinite({"w": torch.ones(3), "count": 7, "name": "x"}) is None


def test_learning_rate_knobs_are_named():
    cfg = OmegaConf.create({"paper": {"agent": {"actor_lr": 1e10, "critic_lr": 3e-4, "tau": 0.005}}})
    assert learning_rate_knobs(cfg) == ["paper.agent.actor_lr=1e+10", "paper.agent.critic_lr=0.0003"]


class _Agent:
    def __init__(self) -> None:
        self.loss, self.action = 1.0, 0.0

    def act(self, obs: Any, step: int, eval_mode: bool) -> np.ndarray:
        return np.array([self.action, 0.0])

    def update(self, batch: Any, step: int) -> dict[str, float]:
        return {"critic_loss": self.loss}

    def learn(self, *transition: Any) -> dict[str, float]:
        return {"td_error": self.loss}

    def explore(self, obs: Any, step: int) -> np.ndarray:  # a batch of envs' actions (on-policy)
        return np.array([[0.0], [self.action]])


def test_the_watch_catches_nonfinite_losses_and_actions():
    seen: list[str] = []

    def diverged(what: str) -> None:
        seen.append(what)
        raise Diverged(what)

    agent = _Agent()
    DivergenceWatch(agent, diverged)
    assert agent.update(None, 0) == {"critic_loss": 1.0} and agent.act(None, 0, False).tolist() == [0.0, 0.0]
    agent.loss = float("nan")
    for call in (lambda: agent.update(None, 1), lambda: agent.learn(1, 2)):
        with pytest.raises(Diverged):
            call()
    agent.loss, agent.action = 1.0, float("inf")
    for call in (lambda: agent.act(None, 2, True), lambda: agent.explore(None, 2)):
        with pytest.raises(Diverged):
            call()
    assert seen == [
        "update() returned critic_loss=nan",
        "learn() returned td_error=nan",
        "act() returned a non-finite action",
        "explore() returned a non-finite action",
    ]


def test_an_online_run_that_diverges_stops_at_its_last_finite_checkpoint(tmp_path):
    # SAC's first update is at frame 100 (seed_frames), right after the checkpoint of frame 100; with
    # lr=1e10 its weights leave the finite numbers at once: the run must stop there, not finish "fine".
    run_dir = tmp_path / "run"
    args = ("debug=smoke", *SAC, "paper.agent.lr=1e10", "checkpoint.every_frames=100")
    proc = run_cli(*args, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: training diverged at step 10") and "paper.agent.lr=" in line, line
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "diverged" and "diverged at step" in status["error"]
    assert _latest(run_dir) == "frame_0000000100"
    _all_finite_checkpoints(run_dir)
    _rows_finite(run_dir / "train.jsonl")
    _rows_finite(run_dir / "eval.jsonl")


def test_an_offline_run_that_diverges_stops_at_its_last_finite_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(common.offline.loop, "read_info", lambda env, split: {"run_dir": "test"})
    monkeypatch.setattr(common.offline.loop, "load_dataset", lambda env, split, spec: pendulum_dataset())
    cfg = _compose(
        "paper=td3bc",
        "env=pendulum",
        "dataset=medium",
        "paper.agent.actor_lr=1e10",
        "paper.agent.critic_lr=1e10",
    )
    run_dir = tmp_path / "run"
    with pytest.raises(Diverged, match=r"diverged at step \d+: .*\(paper\.agent\.actor_lr=1e\+10, "):
        launch.start(cfg, run_dir)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "diverged"
    assert _latest(run_dir) == "frame_0000000000"  # the evaluation at step 0 is checkpointed, then NaN
    _all_finite_checkpoints(run_dir)
    _rows_finite(run_dir / "train.jsonl")


# ------------------------------------------------------------------------------ 4 full disk, read-only


class _Replay:
    """Writes part of a file, then finds the disk full (or not, when `fail` is false)."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def save(self, directory: Path) -> None:
        directory.mkdir()
        with (directory / "obs.npy").open("wb") as f:
            f.write(b"\0" * 1000)
            if self.fail:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def load(self, directory: Path) -> None:
        pass


def test_a_full_disk_mid_checkpoint_leaves_the_previous_one_and_no_temporaries(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    ckpt.save(100, {"w": torch.ones(2)}, {"paper": "p"}, _Replay(fail=False))
    with pytest.raises(RunDirError) as err:
        ckpt.save(200, {"w": torch.ones(2)}, {"paper": "p"}, _Replay(fail=True))
    message = str(err.value)
    assert "\n" not in message and "disk is full" in message and "frame_0000000100" in message
    assert sorted(p.name for p in ckpt.dir.iterdir()) == ["frame_0000000100", "latest"]
    assert ckpt.load(ckpt.latest(), {"paper": "p"}, _Replay(fail=False))["w"].tolist() == [1.0, 1.0]


def test_checkpoint_files_are_on_disk_before_latest_names_them(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    Checkpointer(tmp_path, keep=2).save(100, {"w": torch.ones(2)}, {"paper": "p"}, _Replay(fail=False))
    moved = events.index(("replace", str(tmp_path / "checkpoints" / "latest")))
    synced = {Path(path).name for kind, path in events[:moved] if kind == "fsync"}
    assert {"state.pt", "meta.json", "obs.npy", "replay"} <= synced


def test_a_full_disk_during_a_run_is_one_line_and_recorded(tmp_path, monkeypatch):
    real_write, calls = Checkpointer._write, []

    def write(*args: Any) -> None:
        calls.append(1)
        real_write(*args)
        if len(calls) == 2:  # the second checkpoint finds the disk full once its files are written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Checkpointer, "_write", staticmethod(write))
    run_dir = tmp_path / "run"
    with pytest.raises(RunDirError, match="disk is full"):
        launch.start(_compose(*SAC, "checkpoint.every_frames=100"), run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "disk is full" in status["error"]
    names = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert [n for n in names if n.startswith("frame_")] == ["frame_0000000100"] and "latest" in names
    assert not [n for n in names if "tmp" in n] and not list(run_dir.glob("*.tmp"))
    assert _latest(run_dir) == "frame_0000000100"


def test_a_full_disk_under_a_metrics_row_is_one_line_and_recorded(tmp_path, monkeypatch):
    import common.logger

    def write(self: Any, row: dict) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(common.logger.MetricsFile, "write", write)
    run_dir = tmp_path / "run"
    with pytest.raises(RunDirError, match=f"cannot write in {run_dir}: the disk is full"):
        launch.start(_compose(*SAC), run_dir)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"


def test_a_read_only_run_directory_is_one_line(finished, tmp_path, monkeypatch):
    run_dir = _copy(finished, tmp_path)
    before = _files(run_dir)
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunDirError, match="cannot be written .*read-only"):
        launch.resume(run_dir, [])
    monkeypatch.undo()
    assert _files(run_dir) == before


# ------------------------------------------------------------------------------------ 7 one writer at once


def test_a_second_process_on_a_run_directory_is_refused_naming_the_holder(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    (run_dir / "status.json").unlink()  # a preempted or running run, not a finished one
    before = _files(run_dir)
    with RunLock(run_dir):  # this process writes the run (as a first `resume=` would)
        assert RunLock.held(run_dir)
        with pytest.raises(RunDirError) as err:
            launch.resume(run_dir, [])
        assert f"process {os.getpid()} on host {socket.gethostname()}" in str(err.value)
        assert _files(run_dir) == before
    assert not RunLock.held(run_dir)  # released with the process (or the with-block)
    assert (run_dir / RunLock.FILE).read_text() == ""  # and names nobody


# ------------------------------------------------------------------------- 8 a finished record is final


def test_a_failed_resume_never_changes_a_finished_run(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    status = (run_dir / "status.json").read_bytes()
    assert json.loads(status)["state"] == "finished" and json.loads(status)["score"] is not None
    state = run_dir / "checkpoints" / _latest(run_dir) / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # the newest checkpoint is truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        launch.resume(run_dir, [])
    assert (run_dir / "status.json").read_bytes() == status


# ----------------------------------------------------------------------------- 9 the saved config is final


def test_an_edited_config_is_refused(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("  lr: 0.0003", "  lr: 0.1"))
    before = _files(run_dir)
    with pytest.raises(ConfigError, match="config.yaml was changed after the run started"):
        launch.resume(run_dir, [])
    config.write_text("paper: {name: sac\n")  # a YAML syntax error
    with pytest.raises(ConfigError, match="config.yaml is not a valid config") as err:
        launch.resume(run_dir, [])
    assert "\n" not in str(err.value)
    assert {p: b for p, b in _files(run_dir).items() if p != config} == {
        p: b for p, b in before.items() if p != config
    }


# ---------------------------------------------------------------- 10 killed before its first checkpoint


def test_a_run_killed_before_its_first_checkpoint_says_how_to_start_again(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- paper=sac\n- env=pendulum\n- seed=1\n")
    status = {"state": "running", "started": 0.0, "pid": 2**22 + 1, "host": socket.gethostname()}
    (run_dir / "status.json").write_text(json.dumps(status))  # what a SIGKILLed process leaves
    assert launch.read_status(run_dir)["state"] == "interrupted"  # no process holds its lock
    with pytest.raises(CheckpointError, match="killed before its first checkpoint") as err:
        launch.resume(run_dir, [])
    command = f"python run.py paper=sac env=pendulum seed=1 hydra.run.dir={run_dir}"
    assert str(err.value).endswith(command)
    recorded = json.loads((run_dir / "status.json").read_text())
    assert recorded["state"] == "interrupted" and recorded["restart"] == command


def test_a_live_run_says_who_runs_it(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["pid"] > 0 and status["host"] == socket.gethostname()
    (run_dir / "status.json").write_text(json.dumps({**status, "state": "running"}))
    with RunLock(run_dir):
        assert launch.read_status(run_dir)["state"] == "running"
    assert launch.read_status(run_dir)["state"] == "interrupted"


# ------------------------------------------------------------------ 15 a run directory never runs code


def test_entry_points_resolve_only_inside_the_project(tmp_path):
    assert import_entry("papers.sac.agent.SACAgent").__name__ == "SACAgent"
    for dotted in ("os.system", "runs.x.utils.go", "tests.conftest.run_cli", "builtins.exec"):
        with pytest.raises(ConfigError, match="outside the project's packages"):
            import_entry(dotted)
        with pytest.raises(ConfigError, match="outside the project's packages"):
            import_loop(dotted)


def test_a_malicious_run_directory_cannot_run_code(tmp_path):
    # A run directory inside the checkout's runs/ is importable as a namespace package: before entry points
    # were confined to papers./common., `resume=` imported (ran) the utils.py planted beside the run.
    name = f"_malicious_{uuid.uuid4().hex[:8]}"
    run_dir, marker = ROOT / "runs" / name, tmp_path / "pwned"
    runs_existed = run_dir.parent.exists()
    try:
        run_dir.mkdir(parents=True)
        (run_dir / "utils.py").write_text(
            f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
            "from common.registry import loop\n"
            "go = loop(validate=lambda cfg: None)(lambda cfg, ctx: 0.0)\n"
        )
        cfg = OmegaConf.to_container(_compose(*SAC), resolve=True)
        assert isinstance(cfg, dict)
        cfg["paper"]["loop"] = f"runs.{name}.utils.go"
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        info = {"config_hash": config_hash(OmegaConf.create(cfg)), "wandb_id": "x"}
        (run_dir / "run.json").write_text(json.dumps(info))  # consistent: the hash check passes
        (run_dir / "checkpoints").mkdir()
        with pytest.raises(ConfigError, match="outside the project's packages"):
            launch.resume(run_dir, [])
        assert not marker.exists()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if not runs_existed:
            run_dir.parent.rmdir()


def test_reports_tell_a_killed_run_from_a_live_one_and_know_every_state(tmp_path):
    """A report reads "running" on disk as interrupted when no process holds the run's lock, and keeps the
    states a run can end in (diverged, pruned) instead of calling them unknown."""
    from common.evaluation.runs import load_run, write_run_dir

    path = write_run_dir(tmp_path / "r", "sac", "pendulum", 1, [0, 10], [0.0, 1.0], state="running")
    (path / RunLock.FILE).write_text("")
    assert load_run(path).state == "interrupted"
    with RunLock(path):
        assert load_run(path).state == "running"
    (path / "status.json").write_text(json.dumps({"state": "diverged"}))
    assert load_run(path).state == "diverged"
