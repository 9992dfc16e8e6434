"""On a real SLURM cluster (`.ci/slurm/start.sh`): multiruns through submitit, HPO workers as SLURM jobs,
cancelled jobs and impossible requests. Skipped when there is no cluster (`sinfo` fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cluster() -> str | None:
    """None when a cluster answers, else why not."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`sinfo` cannot run ({e})"
    if out.returncode != 0 or not out.stdout.strip():
        return f"`sinfo` failed: {(out.stderr.strip() or 'no nodes').splitlines()[0]}"
    return None


_WHY_NOT = _cluster()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        _WHY_NOT is not None, reason=f"no SLURM cluster: {_WHY_NOT} (start .ci/slurm/start.sh)"
    ),
]

# What the one-node test cluster can give a job (the acceptance command reads these, as a user's shell would)
SLURM_ENV = {
    "RLREPRO_SLURM_GPUS": "0",
    "RLREPRO_SLURM_CPUS": "1",
    "RLREPRO_SLURM_MEM_GB": "2",
    "RLREPRO_SLURM_TIME_MIN": "10",
    "OMP_NUM_THREADS": "1",
    "WANDB_MODE": "disabled",
    "HYDRA_FULL_ERROR": "0",
}


def run_py(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **SLURM_ENV},
    )


def test_a_two_job_multirun_runs_on_slurm_and_writes_its_run_dirs(tmp_path):
    start = time.time()
    proc = run_py(
        "-m", "hydra/launcher=slurm", "paper=sac", "env=cheetah_run", "seed=0,1", "debug=smoke",
        f"hydra.sweep.dir={tmp_path}", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (0, 1):
        run_dir = tmp_path / f"{seed}_sac_cheetah_run_s{seed}"
        assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
        info = json.loads((run_dir / "run.json").read_text())
        assert info["seed"] == seed and info["slurm_job_id"]  # it ran inside a SLURM job
        assert info["command"].startswith("run.py -m hydra/launcher=slurm paper=sac")  # not submitit's
        assert (run_dir / "eval.jsonl").read_text().count("\n") == 3  # frames 0, 200, 400
    print(f"two-job multirun: {time.time() - start:.1f} s")


def test_an_hpo_study_with_two_slurm_workers_prunes_and_evaluates_on_test_seeds(tmp_path):
    import yaml

    space = yaml.safe_load((ROOT / "conf" / "hpo" / "sac_smoke.yaml").read_text())
    space["overrides"] = ["debug=smoke", "paper.train.num_frames=400"]
    space["sampler"] = {"name": "random", "seed": 0}
    # every trial after the first is compared with the median at each evaluation after frame 0: with 8 trials
    # the chance that none falls below it is < 1 %
    space["pruner"] = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 1}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    study_dir = tmp_path / "study"
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "common.hpo", str(path), "--trials", "8", "--seeds", "0",
         "--test-seeds", "100,101", "--workers", "2", "--launcher", "slurm", "--study-dir", str(study_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **SLURM_ENV},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((study_dir / "report.json").read_text())
    states = [h["state"] for h in report["history"]]
    assert len(states) >= 8 and states.count("pruned") >= 1 and states.count("complete") >= 1, states
    workers = {json.loads(p.read_text())["slurm_job_id"] for p in study_dir.glob("trials/*/run.json")}
    assert len(workers) == 2 and None not in workers  # both SLURM workers ran trials
    assert set(report["test_scores"]) == {"100", "101"}
    tests = [json.loads(p.read_text()) for p in study_dir.glob("test/*/run.json")]
    assert sorted(t["seed"] for t in tests) == [100, 101] and all(t["slurm_job_id"] for t in tests)
    assert all((study_dir / f).exists() for f in ("report.md", "history.png", "tuned.yaml"))
    print(f"HPO on SLURM: {states}, {time.time() - start:.1f} s")


def _multirun_with_a_long_second_job(tmp_path: Path, name: str) -> subprocess.Popen[str]:
    """Two jobs: a short one (400 frames) and one that runs until it is cancelled."""
    return subprocess.Popen(
        [sys.executable, "run.py", "-m", "hydra/launcher=slurm", "paper=sac", "env=cheetah_run",
         "debug=smoke", "paper.train.num_frames=400,10000000", "hydra.launcher.array_parallelism=2",
         f"hydra.launcher.name={name}", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **SLURM_ENV},
    )  # fmt: skip


def _wait_for_the_long_job_alone(
    tmp_path: Path, proc: subprocess.Popen[str], deadline_s: float = 180
) -> None:
    """Until the long run has started and the short one has finished (on a loaded machine the short one can
    still be running when the long one starts; both jobs carry the same name)."""
    deadline = time.time() + deadline_s
    short = tmp_path / "0_sac_cheetah_run_s1" / "status.json"
    while not (
        (tmp_path / "1_sac_cheetah_run_s1" / "train.jsonl").exists()
        and short.exists()
        and json.loads(short.read_text()).get("state") == "finished"
    ):
        assert proc.poll() is None and time.time() < deadline, "the long run never started alone"
        time.sleep(0.5)


def _assert_names_the_unfinished_run(tmp_path: Path, returncode: int, err: str) -> None:
    """Exit status 1, the interrupted run listed with the command that continues it, the finished one not."""
    assert returncode == 1, err[-3000:]
    lines = [line.strip() for line in err.splitlines()]
    second = [line for line in lines if line.startswith(f"{tmp_path / '1_sac_cheetah_run_s1'}: ")]
    assert len(second) == 1, err[-3000:]
    assert "python run.py resume=" in second[0] or "start it again with: python run.py" in second[0]
    assert not any(line.startswith(f"{tmp_path / '0_sac_cheetah_run_s1'}: ") for line in lines)
    assert "Traceback" not in err


def test_a_cancelled_job_fails_the_multirun_naming_the_run_and_how_to_continue_it(tmp_path):
    """Before: scancel (SIGTERM: the run checkpoints and returns) ended the multirun with exit 0, silently."""
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    proc = _multirun_with_a_long_second_job(tmp_path, name)
    try:
        _wait_for_the_long_job_alone(tmp_path, proc)
        out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %j"], capture_output=True, text=True)
        jobs = [line.split()[0] for line in out.stdout.splitlines()]
        subprocess.run(["scancel", "--name", name], check=True)  # the long job: the short one is done
        cancelled = time.time()
        _, err = proc.communicate(timeout=180)  # bounded: accounting reports the state to submitit
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_names_the_unfinished_run(tmp_path, proc.returncode, err)
    print(f"cancelled job(s) {jobs} reported after {time.time() - cancelled:.1f} s")


def test_an_impossible_request_is_rejected_in_one_line_before_submission(tmp_path):
    proc = run_py(
        "-m", "hydra/launcher=slurm", "paper=sac", "env=cheetah_run", "debug=smoke",
        "hydra.launcher.cpus_per_task=512", f"hydra.sweep.dir={tmp_path}", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: SLURM cannot run this request (--cpus-per-task=512") and "processors" in last
    )
    assert "Traceback" not in proc.stderr and not (tmp_path / ".submitit").exists()


@pytest.mark.slow  # SLURM holds a requeued job ~2 min (BeginTime) before it starts again
def test_a_signalled_job_checkpoints_is_requeued_and_resumes_its_run(tmp_path):
    name = f"requeue-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "run.py", "-m", "hydra/launcher=slurm", "paper=sac", "env=cheetah_run",
         "debug=smoke", "paper.train.num_frames=4000", "checkpoint.every_frames=200",
         f"hydra.launcher.name={name}", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **SLURM_ENV},
    )  # fmt: skip
    run_dir = tmp_path / "0_sac_cheetah_run_s1"
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "latest").exists():
            assert proc.poll() is None and time.time() < deadline, "the run never checkpointed"
            time.sleep(0.2)
        job = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout
        # what submitit's --signal=USR2@signal_delay_s sends before a time limit (and on preemption)
        subprocess.run(["scancel", "--signal=USR2", job.split()[0]], check=True)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["resumed"] is True  # the requeued job continued the run
    frames = [json.loads(line)["frame"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert frames == list(range(0, 4001, 200))  # every evaluation exactly once across the two jobs


def test_an_impossible_hpo_request_is_refused_before_the_study_is_written(tmp_path):
    study_dir = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "common.hpo", str(ROOT / "conf" / "hpo" / "sac_smoke.yaml"), "--launcher",
         "slurm", "--study-dir", str(study_dir), "hydra.launcher.cpus_per_task=512"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **SLURM_ENV},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: SLURM cannot run this request (") and "--cpus-per-task=512" in last
    assert "Traceback" not in proc.stderr and not study_dir.exists()


def test_an_hpo_worker_job_cancelled_mid_trial_is_retried_and_the_budget_completes(tmp_path):
    import yaml

    space = yaml.safe_load((ROOT / "conf" / "hpo" / "sac_smoke.yaml").read_text())
    space["overrides"] = ["debug=smoke", "paper.train.num_frames=1000"]
    space["sampler"] = {"name": "random", "seed": 0}
    space["pruner"] = {"name": "none"}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    study_dir = tmp_path / "study"
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.hpo", str(path), "--trials", "2", "--seeds", "0",
         "--test-seeds", "100", "--workers", "2", "--launcher", "slurm", "--study-dir", str(study_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **SLURM_ENV},
    )  # fmt: skip
    try:
        deadline, job = time.time() + 300, None
        while job is None:  # a trial training inside a worker job: cancel that job
            assert proc.poll() is None and time.time() < deadline, "no trial started training"
            time.sleep(0.5)
            for status in study_dir.glob("trials/*/status.json"):
                info = status.parent / "run.json"
                if json.loads(status.read_text())["state"] == "running" and info.exists():
                    task = json.loads(info.read_text())["slurm_job_id"]
                    assert "_" in task  # "<array>_<task>": the task alone, never the whole array
                    # the worker task whose own job id is the array's: a bare-id scancel would end both
                    raw = subprocess.run(
                        ["squeue", "-h", "-j", task, "-o", "%A"], capture_output=True, text=True
                    )
                    if raw.stdout.strip() == task.split("_")[0]:
                        job, lost = task, int(status.parent.name.split("_")[0])
                        break
        subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
        _, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((study_dir / "report.json").read_text())
    history = {h["trial"]: h for h in report["history"]}
    assert [h["trial"] for h in report["history"] if h["state"] == "fail"] == [lost]  # the other worker lived
    complete = [h for h in report["history"] if h["state"] == "complete"]
    assert len(complete) == 2 and any(h["params"] == history[lost]["params"] for h in complete)
