"""HPO: search spaces, the tuning/test seed protocol, pruning through the run loop's on_eval, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from common.errors import ConfigError
from common.hpo.space import SearchSpace, format_value, to_overrides

ROOT = Path(__file__).resolve().parent.parent
SMOKE_SPACE = ROOT / "conf" / "hpo" / "sac_smoke.yaml"


def hpo_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "common.hpo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# ------------------------------------------------------------------------------------- search spaces


def test_search_space_parses_every_kind_and_samples_conditionals_only_when_they_apply():
    space = SearchSpace.parse(
        {
            "a.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "a.width": {"type": "int", "low": 64, "high": 512, "step": 64},
            "a.every": {"type": "categorical", "choices": [1, 2]},
            "a.repeats": {"type": "int", "low": 1, "high": 4, "when": {"a.every": 1}},
        }
    )
    assert [p.type for p in space.params] == ["float", "int", "categorical", "int"]
    assert space.params[0].log and space.params[1].step == 64
    fixed = {"a.lr": 3e-4, "a.width": 128, "a.every": 2, "a.repeats": 3}
    assert space.suggest(optuna.trial.FixedTrial(fixed)) == {"a.lr": 3e-4, "a.width": 128, "a.every": 2}
    fixed["a.every"] = 1
    assert space.suggest(optuna.trial.FixedTrial(fixed))["a.repeats"] == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"x": {"type": "float", "low": 1.0, "high": 1.0}}, "empty or inverted range"),
        ({"x": {"type": "float", "low": 2.0, "high": 1.0}}, "empty or inverted range"),
        (
            {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": True}},
            "so low=0.0 must be > 0",
        ),
        ({"x": {"type": "int", "low": 1.5, "high": 4}}, "x.low=1.5 must be a finite int"),
        ({"x": {"type": "categorical", "choices": []}}, "non-empty list of choices"),
        ({"x": {"type": "uniform", "low": 0, "high": 1}}, "use one of float, int, categorical"),
        ({"x": {"type": "float", "low": 0, "high": 1, "lgo": True}}, "unknown field(s) lgo"),
        ({"x": {"type": "float", "low": 0, "high": 1, "when": {"y": 1}}}, "conditional on y"),
        ({}, "it is empty"),
    ],
)
def test_bad_search_spaces_are_one_line_errors(spec, message):
    with pytest.raises(ConfigError) as e:
        SearchSpace.parse(spec, where="space.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_override_values_read_back_unchanged_by_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = {"a": 1e-5, "b": 3, "c": "linear(1.0,0.1,500000)", "d": True, "e": None, "f": "it's"}
    parsed = OverridesParser.create().parse_overrides(to_overrides(params))
    assert {o.key_or_group: o.value() for o in parsed} == params
    assert format_value(0.1) == "0.1"


def _space_file(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(SMOKE_SPACE.read_text())
    data.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("params", "args", "message"),
    [
        (
            {"paper.agent.lrr": {"type": "float", "low": 1e-5, "high": 1e-3}},
            [],
            "unknown hyperparameter path",
        ),
        ({"paper.agent.hidden_dim": {"type": "categorical", "choices": ["big"]}}, [], "has the wrong type"),
        (None, ["--seeds", "0,1", "--test-seeds", "1,2"], "tuning and test seeds must be disjoint"),
        (None, ["--pruner", "asha"], "pruner 'asha'"),
    ],
)
def test_bad_studies_fail_in_one_line_before_anything_runs(tmp_path, params, args, message):
    space = _space_file(tmp_path, **({"params": params} if params else {}))
    study_dir = tmp_path / "study"
    proc = hpo_cli(str(space), "--study-dir", str(study_dir), *args, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not study_dir.exists()


def test_seed_sets_must_be_disjoint_in_the_spec():
    from common.hpo.study import StudySpec, check_spec

    spec = StudySpec(space_file="s", paper="sac", env="cartpole_swingup", params={}, tuning_seeds=[0, 1, 2])
    spec.test_seeds = [2, 100]
    with pytest.raises(ConfigError, match=r"disjoint .* both contain \[2\]"):
        check_spec(spec)


# --------------------------------------------------------------------------------- pruning and resume


def _smoke_spec(**changes):
    from common.hpo.study import StudySpec

    data = yaml.safe_load(SMOKE_SPACE.read_text())
    spec = StudySpec(
        space_file=str(SMOKE_SPACE),
        paper=data["paper"],
        env=data["env"],
        params=data["params"],
        overrides=[*data["overrides"], "paper.train.num_frames=400"],
        tuning_seeds=[0],
        test_seeds=[100],
        sampler={"name": "random", "seed": 0},
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    for k, v in changes.items():
        setattr(spec, k, v)
    return spec


def test_a_trial_below_the_median_is_pruned_through_on_eval_and_its_run_says_so(tmp_path):
    from common.hpo.study import Objective, open_study, prepare

    spec = _smoke_spec(n_trials=1)
    prepare(spec, tmp_path)
    study = open_study(spec, tmp_path)
    # a finished trial whose every evaluation scored 1e9: any real run is below the median at its first report
    study.add_trial(
        optuna.trial.create_trial(
            params={"paper.agent.lr": 3e-4},
            distributions={"paper.agent.lr": optuna.distributions.FloatDistribution(1e-5, 3e-3, log=True)},
            value=1e9,
            intermediate_values={0: 1e9, 1: 1e9, 2: 1e9},
        )
    )
    study.optimize(Objective(spec, tmp_path), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]  # pruned at the first evaluation (frame 0), no later
    status = json.loads((tmp_path / "trials" / f"{trial.number:04d}_s0" / "status.json").read_text())
    assert status["state"] == "pruned" and "pruned at evaluation 1 (seed 0, frame 0)" in status["reason"]


def test_an_interrupted_study_resumes_to_completion_and_retries_the_lost_trial(tmp_path):
    space = _space_file(
        tmp_path,
        overrides=["debug=smoke", "paper.train.num_frames=400"],
        pruner={"name": "none"},
        sampler={"name": "random", "seed": 0},
    )
    study_dir = tmp_path / "study"
    args = [str(space), "--trials", "3", "--seeds", "0", "--test-seeds", "100", "--study-dir", str(study_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.hpo", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while not (study_dir / "trials" / "0001_s0" / "checkpoints").exists():  # trial 0 done, trial 1 running
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a crashed worker: trial 1 stays RUNNING in the journal
    proc.wait()

    done = hpo_cli(*args, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trials [1] were left running by a dead worker" in done.stderr
    report = json.loads((study_dir / "report.json").read_text())
    states = [(h["trial"], h["state"]) for h in report["history"]]
    assert states == [(0, "complete"), (1, "fail"), (2, "complete"), (3, "complete")]
    assert report["history"][2]["params"] == report["history"][1]["params"]  # the lost trial, tried again
    assert set(report["test_scores"]) == {"100"} and (study_dir / "tuned.yaml").exists()


def _running_trial(study_dir: Path) -> tuple[int, int] | None:
    """(trial number, worker pid) of a trial whose run is training, read from the study's journal."""
    from common.hpo.study import StudySpec, open_study

    if not (study_dir / "study.journal").exists():
        return None
    study = open_study(StudySpec.load(study_dir), study_dir)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        status = study_dir / "trials" / f"{t.number:04d}_s0" / "status.json"
        who = t.user_attrs.get("worker")
        if who and status.exists() and json.loads(status.read_text())["state"] == "running":
            return t.number, int(who["pid"])
    return None


def test_a_worker_killed_mid_trial_is_retried_and_the_study_completes_its_budget(tmp_path):
    """Before: the killed worker's trial stayed RUNNING, counted towards --trials and was never retried."""
    space = _space_file(
        tmp_path,
        overrides=["debug=smoke", "paper.train.num_frames=400"],
        pruner={"name": "none"},
        sampler={"name": "random", "seed": 0},
    )
    study_dir = tmp_path / "study"
    args = [str(space), "--trials", "2", "--seeds", "0", "--test-seeds", "100", "--workers", "2"]
    args += ["--study-dir", str(study_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.hpo", *args],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline, found = time.time() + 300, None
        while found is None:
            assert proc.poll() is None and time.time() < deadline, "no trial started training"
            time.sleep(0.2)
            found = _running_trial(study_dir)
        lost, pid = found
        os.kill(pid, signal.SIGKILL)  # one of the two workers dies mid-trial; the driver and the other live
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((study_dir / "report.json").read_text())
    history = {h["trial"]: h for h in report["history"]}
    assert history[lost]["state"] == "fail"
    complete = [h for h in report["history"] if h["state"] == "complete"]
    assert len(complete) == 2  # the full budget of completed trials
    retries = [h for h in complete if h["params"] == history[lost]["params"]]
    assert retries and retries[0]["trial"] > lost  # the lost trial, tried again
    info = json.loads(next((study_dir / "trials").glob("*/run.json")).read_text())
    assert info["command"].startswith("python -m common.hpo ") and "--workers 2" in info["command"]


def test_an_impossible_slurm_request_is_refused_before_the_study_is_written(tmp_path):
    """`sbatch --test-only` refuses (a fake sbatch here: the real one in tests/test_slurm.py)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\necho 'sbatch: error: CPU count per node can not be satisfied' >&2\n"
        "echo 'sbatch: error: Batch job submission failed: "
        "Requested node configuration is not available' >&2\n"
        "exit 1\n"
    )
    sbatch.chmod(0o755)
    study_dir = tmp_path / "study"
    proc = subprocess.run(
        [sys.executable, "-m", "common.hpo", str(SMOKE_SPACE), "--launcher", "slurm", "--study-dir",
         str(study_dir), "hydra.launcher.cpus_per_task=512"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "WANDB_MODE": "disabled"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: SLURM cannot run this request (") and "--cpus-per-task=512" in last
    assert "Requested node configuration is not available" in last
    assert not study_dir.exists()  # no study.json, journal or .submitit/


def test_a_retried_trial_takes_the_lost_ones_place_in_the_budget():
    """Before: four trials minus one retry counted 3 of --trials 3 (the lost trial counted, its retry
    waiting), so no worker ran the retry."""
    from common.hpo.study import _counted, _to_run

    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for value in (1.0, None, 2.0):  # trial 1 was lost (its worker died), the others completed
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        trial = optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=value, state=state)
        study.add_trial(trial)
    study.enqueue_trial({"x": 0.5}, user_attrs={"retry_of": 1})
    spec = _smoke_spec(n_trials=3)
    assert _counted(study) == 2 and _to_run(study, spec)  # trials 0 and 2; the retry still to run
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # runs the waiting retry
    assert study.trials[-1].user_attrs["retry_of"] == 1
    assert _counted(study) == 3 and not _to_run(study, spec)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "50", "SLURM_ARRAY_JOB_ID": "50", "SLURM_ARRAY_TASK_ID": "1"}, "50_1"),
        ({"SLURM_JOB_ID": "51", "SLURM_ARRAY_JOB_ID": "50", "SLURM_ARRAY_TASK_ID": "0"}, "50_0"),
        ({"SLURM_JOB_ID": "47"}, "47"),
        ({}, None),
    ],
)
def test_a_slurm_job_is_named_so_that_commands_reach_that_task_alone(monkeypatch, env, expected):
    """SLURM gives an array's own id to one of its tasks; `scancel 50` or `squeue -j 50` then act on every
    task of array 50, so an array task is named `<array>_<task>`."""
    from common.hpo.study import owner
    from common.runtime import slurm_job_id

    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert slurm_job_id() == expected and owner()["slurm_job"] == expected


def _fake_squeue(tmp_path: Path, monkeypatch, output: str) -> Path:
    """A `squeue` first on PATH that records its arguments and prints `output`."""
    calls = tmp_path / "calls"
    script = tmp_path / "bin" / "squeue"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nprintf "{output}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return calls


@pytest.mark.parametrize(
    ("output", "alive"),
    [("RUNNING\\n", True), ("COMPLETING\\n", True), ("CANCELLED\\n", False), ("", False),
     ("CANCELLED\\nRUNNING\\n", True)],
)  # fmt: skip
def test_a_workers_job_is_alive_while_squeue_shows_it_live(tmp_path, monkeypatch, output, alive):
    """Before: an array-wide answer (one line per task) was never a live state, so a running worker's trial
    was failed and retried by the other worker."""
    from common.hpo.study import _owner_alive

    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    calls = _fake_squeue(tmp_path, monkeypatch, output)
    assert _owner_alive({"host": "elsewhere", "pid": 1, "slurm_job": "50_1", "slurm_restart": "0"}) is alive
    assert calls.read_text().split() == ["-h", "-j", "50_1", "-o", "%T"]
