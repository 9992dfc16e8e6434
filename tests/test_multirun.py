"""A multirun whose runs did not all finish says which, how to continue each, and exits non-zero — with the
local launcher (a run stopped by SIGTERM) and under SLURM (a job cancelled, requeued or killed; simulated
here, on a real cluster in tests/test_slurm.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from common.command import MultirunCheck, report_failed_multirun, report_unfinished

ROOT = Path(__file__).resolve().parent.parent
STOPPED = "stopped by a signal (preempted, cancelled or requeued)"


def _run_dir(sweep: Path, name: str, state: str | None, checkpoint: bool = False) -> Path:
    run_dir = sweep / name
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={name[-1]}\n- paper=sac\n")
    if state is not None:
        (run_dir / "status.json").write_text(json.dumps({"state": state}))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "latest").write_text("")
    return run_dir


def test_unfinished_runs_are_listed_with_the_command_that_continues_each(tmp_path, capsys):
    _run_dir(tmp_path, "0_sac_s0", "finished")
    preempted = _run_dir(tmp_path, "1_sac_s1", "preempted", checkpoint=True)
    killed = _run_dir(tmp_path, "2_sac_s2", "running", checkpoint=True)
    early = _run_dir(tmp_path, "3_sac_s3", "running")
    with pytest.raises(SystemExit) as e:
        report_unfinished(tmp_path)
    assert e.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"multirun: 3 problem(s) in {tmp_path}:"
    assert lines[1].strip() == f"{preempted}: {STOPPED}; continue with: python run.py resume={preempted}"
    assert lines[2].strip().endswith(f"continue with: python run.py resume={killed}")
    assert (
        lines[3]
        .strip()
        .endswith(f"start it again with: python run.py seed=3 paper=sac hydra.run.dir={early}")
    )


def test_a_multirun_whose_runs_all_finished_passes(tmp_path, capsys):
    _run_dir(tmp_path, "0_sac_s0", "finished")
    report_unfinished(tmp_path)  # returns: nothing to say
    assert capsys.readouterr().err == ""


def test_a_multirun_that_hydra_ends_on_a_failed_job_lists_the_runs_that_did_not_finish(tmp_path, capsys):
    """submitit raises for a SLURM job killed outright (scancel after the grace time); Hydra then ends the
    multirun with status 1 and its error, and run.py adds the runs that did not finish, the preempted one
    (its job returned normally) included."""
    _run_dir(tmp_path, "0_sac_s0", "finished")
    killed = _run_dir(tmp_path, "1_sac_s1", "running", checkpoint=True)
    preempted = _run_dir(tmp_path, "2_sac_s2", "preempted", checkpoint=True)
    MultirunCheck().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    try:
        with pytest.raises(SystemExit) as e:
            report_failed_multirun()
    finally:
        MultirunCheck.sweep_dir = None
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert f"{killed}: ended while running (its job cancelled or killed); continue with: " in err
    assert f"{preempted}: {STOPPED}; continue with: python run.py resume={preempted}" in err
    assert "0_sac_s0" not in err


def test_a_local_multirun_with_a_run_stopped_by_sigterm_exits_non_zero_naming_it(tmp_path):
    """Without the check, the stopped run returned normally and the multirun exited 0 in silence; and the
    signal stops the sweep: the second job never starts (it used to start as if nothing had happened)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        [sys.executable, "run.py", "-m", "paper=sac", "env=cheetah_run", "debug=smoke", "seed=1,2",
         "paper.train.num_frames=100000", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = tmp_path / "0_sac_cheetah_run_s1"
    try:
        deadline = time.time() + 180
        while not (run_dir / "train.jsonl").exists():  # training: the stop flag is installed
            assert proc.poll() is None and time.time() < deadline, "the run never started training"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "preempted"
    assert f"{run_dir}: {STOPPED}; continue with: python run.py resume={run_dir}" in err
    assert "the multirun stops here on SIGTERM" in err and f"hydra.sweep.dir={tmp_path}" in err
    assert not (tmp_path / "1_sac_cheetah_run_s2").exists()


def test_run_json_records_the_users_command_inside_a_submitit_job(tmp_path):
    """submitit's local executor starts each job as `python -m submitit.core._submit ...`, as on SLURM:
    run.json records the command the user typed, not that one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    args = ["run.py", "-m", "hydra/launcher=submitit_local", "paper=sac", "env=cheetah_run", "debug=smoke"]
    args += ["paper.train.num_frames=200", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "0_sac_cheetah_run_s1" / "run.json").read_text())
    assert info["command"] == " ".join(args)
