"""An Optuna study over a paper's config, following how-to-autorl (Eimer et al., ICML 2023, arXiv 2306.01324):
tune on tuning seeds, report the best config on disjoint test seeds.

A trial samples the search space, trains one run per tuning seed (in the worker's process, one after the
other) and returns the mean of their final `metric`. Every logged evaluation is reported to Optuna through
`RunContext.on_eval` (step = the trial's evaluation count, so all trials compare at the same seed and frame);
the pruner may end the trial there. Storage is an Optuna journal file in the study directory (safe on a
shared file system for SLURM workers; never SQLite there, optuna#6036) or any RDB URL. Workers are processes
or SLURM jobs. A trial left RUNNING by a dead worker (its process gone from this host, its SLURM job ended
or requeued) is marked failed and its parameters tried again once, by a live worker before its next trial or
by the driver after the workers stop; the retry takes the lost trial's place in the --trials budget. Optuna's
heartbeat (`fail_stale_trials`) would do this for RDB storages only, not for the journal file. Running the
same command again resumes the study.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, RlreproError
from common.hpo.space import SearchSpace, to_overrides
from common.registry import ROOT

CONF_DIR = ROOT / "conf"
GROUPS = ("paper", "env", "paper_env", "logger", "debug", "experiment")
SPEC_FILE = "study.json"
JOURNAL_FILE = "study.journal"
# how-to-autorl checklist: tuning seeds 0..4; test seeds far from them (ARLBench tests on 100, 101, ...)
DEFAULT_TUNING_SEEDS = [0, 1, 2, 3, 4]
DEFAULT_TEST_SEEDS = list(range(100, 110))
# The fields that define a study: another value means another study (another --study-dir)
IDENTITY = ("paper", "env", "params", "overrides", "metric", "direction", "tuning_seeds", "sampler", "pruner")


@dataclass
class StudySpec:
    """Everything a worker needs, saved as `study.json` in the study directory."""

    space_file: str
    paper: str
    env: str
    params: dict[str, Any]
    overrides: list[str] = field(default_factory=list)  # for every run (budgets, debug=smoke, ...)
    launcher_overrides: list[str] = field(default_factory=list)  # hydra.launcher.* for SLURM workers
    metric: str = "episode_return"
    direction: str = "maximize"
    n_trials: int = 50
    tuning_seeds: list[int] = field(default_factory=lambda: list(DEFAULT_TUNING_SEEDS))
    test_seeds: list[int] = field(default_factory=lambda: list(DEFAULT_TEST_SEEDS))
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    workers: int = 1
    launcher: str = "local"
    storage: str | None = None

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.parse(self.params, where=self.space_file)

    def run_overrides(self, seed: int, params: dict[str, Any] | None = None) -> list[str]:
        chosen = to_overrides(params or {})
        return [f"paper={self.paper}", f"env={self.env}", *self.overrides, *chosen, f"seed={seed}"]

    def save(self, study_dir: Path) -> None:
        (study_dir / SPEC_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, study_dir: Path) -> StudySpec:
        return cls(**json.loads((study_dir / SPEC_FILE).read_text()))


# ------------------------------------------------------------------------------------------ configs


def compose_run(overrides: Sequence[str]) -> DictConfig:
    """The config `python run.py OVERRIDES` would run, with run.py's checks (unknown keys, wrong types)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from common.config import check_overrides

    groups = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in GROUPS]
    values = [o for o in overrides if o not in groups]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
            baseline = compose("config", overrides=groups)
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    check_overrides(cfg, baseline, values, groups=GROUPS)
    return cfg


def _check_group_files(overrides: Sequence[str]) -> None:
    """Keys that the chosen paper_env/experiment files set must be in the paper's config (as in run.py)."""
    from hydra import compose, initialize_config_dir

    from common.config import check_group_files

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        choices = {str(k): v for k, v in cfg.hydra.runtime.choices.items()}
        check_group_files(lambda o: compose("config", overrides=o), choices, CONF_DIR)


def launcher_params(spec: StudySpec) -> dict[str, Any]:
    """The resolved `hydra/launcher=slurm` settings (conf/local/slurm.yaml, RLREPRO_SLURM_*, overrides)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    overrides = [f"paper={spec.paper}", f"env={spec.env}", "hydra/launcher=slurm", *spec.launcher_overrides]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from e
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert isinstance(params, dict)
    # these interpolate hydra.sweep.dir and hydra.job.name: the study directory and job names replace them
    params.pop("submitit_folder", None)
    params.pop("name", None)
    resolved = OmegaConf.to_container(OmegaConf.create(params), resolve=True)
    assert isinstance(resolved, dict)
    return {str(k): v for k, v in resolved.items()}


def check_spec(spec: StudySpec) -> None:
    """Every one-line error a study can raise before anything runs or is submitted."""
    from common.config import resolved_yaml
    from common.registry import import_loop

    if spec.direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction={spec.direction!r}: use maximize or minimize")
    if spec.n_trials < 1 or spec.workers < 1:
        raise ConfigError(f"--trials ({spec.n_trials}) and --workers ({spec.workers}) must be at least 1")
    for name, seeds in (("tuning", spec.tuning_seeds), ("test", spec.test_seeds)):
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"the {name} seeds {seeds} must be a non-empty list without repeats")
    shared = sorted(set(spec.tuning_seeds) & set(spec.test_seeds))
    if shared:
        raise ConfigError(
            f"tuning and test seeds must be disjoint (how-to-autorl); both contain {shared}: "
            f"choose other --test-seeds (default {DEFAULT_TEST_SEEDS[0]}-{DEFAULT_TEST_SEEDS[-1]})"
        )
    make_sampler(spec, 0), make_pruner(spec)  # unknown names fail here
    if spec.launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher {spec.launcher}: use local or slurm")
    space = spec.space
    base = compose_run(spec.run_overrides(spec.tuning_seeds[0]))
    _check_group_files(spec.run_overrides(spec.tuning_seeds[0]))
    resolved_yaml(base)
    import_loop(base.paper.loop).validate(base)
    _check_paths(space, base, spec)
    if spec.launcher == "slurm":
        from common.hpo.slurm import check_launcher, check_request

        params = launcher_params(spec)
        check_launcher(params)
        check_request(params)  # SLURM could never run it: refused before the study directory is written


def _check_paths(space: SearchSpace, base: DictConfig, spec: StudySpec) -> None:
    from common.config import check_overrides

    groups = [o for o in spec.run_overrides(0) if o.lstrip("+~").split("=", 1)[0] in GROUPS]
    baseline = compose_run(groups)
    for p in space.params:
        if OmegaConf.select(base, p.path, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise ConfigError(
                f"{spec.space_file}: unknown hyperparameter path {p.path!r}: it is not in the config of "
                f"paper={spec.paper} env={spec.env}; check it with `python run.py paper={spec.paper} "
                f"env={spec.env} --cfg job`"
            )
        for value in p.values():
            trial_cfg = base.copy()
            OmegaConf.update(trial_cfg, p.path, value, force_add=False)
            try:
                check_overrides(trial_cfg, baseline, to_overrides({p.path: value}), groups=GROUPS)
            except ConfigError as e:
                raise ConfigError(f"{spec.space_file}: {e}") from e


_ABSENT = object()


# ------------------------------------------------------------------------------------- the Optuna parts


def make_sampler(spec: StudySpec, worker: int) -> optuna.samplers.BaseSampler:
    """TPE (default; rl-baselines3-zoo: 10 random start-up trials, multivariate) or random search."""
    s = dict(spec.sampler)
    name, seed = s.pop("name", "tpe"), s.pop("seed", 0)
    seed = None if seed is None else int(seed) + worker  # workers must not propose the same points
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        conditional = any(p.when for p in spec.space.params)
        with warnings.catch_warnings():  # multivariate/group/constant_liar are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                n_startup_trials=int(s.pop("n_startup_trials", 10)),
                multivariate=bool(s.pop("multivariate", True)),
                group=conditional,  # conditional spaces: model each set of co-occurring parameters
                constant_liar=spec.workers > 1,  # parallel workers: do not all sample the same region
                seed=seed,
                **s,
            )
    raise ConfigError(f"sampler {name!r}: use tpe or random")


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Median (default) or Hyperband over the evaluations a trial reports; `none` never prunes."""
    p = dict(spec.pruner)
    name = p.pop("name", "median")
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(p.pop("n_startup_trials", 5)),
            n_warmup_steps=int(p.pop("n_warmup_steps", 0)),
            **p,
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.pop("min_resource", 1), reduction_factor=int(p.pop("reduction_factor", 3)), **p
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner {name!r}: use median, hyperband or none")


def make_storage(spec: StudySpec, study_dir: Path) -> Any:
    if spec.storage:
        return spec.storage  # an RDB URL (PostgreSQL/MySQL; not SQLite on a shared file system)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(study_dir / JOURNAL_FILE)
    # an O_EXCL lock file (Optuna: NFSv3 or later) instead of the default symlink lock: docs/hpo-and-slurm.md
    return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def open_study(spec: StudySpec, study_dir: Path, worker: int = 0) -> optuna.Study:
    return optuna.create_study(
        study_name=study_dir.resolve().name,
        storage=make_storage(spec, study_dir),
        sampler=make_sampler(spec, worker),
        pruner=make_pruner(spec),
        direction=optuna.study.StudyDirection[spec.direction.upper()],
        load_if_exists=True,
    )


def _counted(study: optuna.Study) -> int:
    """Trials that count towards --trials: all but those still waiting to run and the lost ones whose
    parameters were enqueued again (each retry counts in place of the trial it retries)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in retried)


def _waiting(study: optuna.Study) -> int:
    """Enqueued trials (retries of lost ones) that no worker has started."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _to_run(study: optuna.Study, spec: StudySpec) -> bool:
    return _counted(study) < spec.n_trials or _waiting(study) > 0


# -------------------------------------------------------------------------------------------- trials


def owner() -> dict[str, Any]:
    """Who runs a trial: checked when a study resumes, to tell a live worker from a dead one."""
    from common.runtime import slurm_job_id

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": slurm_job_id(),  # `<array>_<task>` for a worker of an array: that task alone
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),  # a requeued job is another owner
    }


def _owner_alive(who: dict[str, Any]) -> bool:
    from common.runtime import slurm_job_id

    if who.get("slurm_job") and who["slurm_job"] == slurm_job_id():
        # this job, requeued since (another restart count): the process that ran the trial is gone
        return who.get("slurm_restart") == os.environ.get("SLURM_RESTART_COUNT", "0")
    if who.get("slurm_job"):
        try:
            out = subprocess.run(
                ["squeue", "-h", "-j", str(who["slurm_job"]), "-o", "%T"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return True  # cannot tell: leave it
        if out.returncode != 0:  # a job SLURM forgot is gone; a controller that does not answer tells nothing
            return "Invalid job id" not in out.stderr
        live = ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING", "REQUEUED")
        return any(state.strip() in live for state in out.stdout.splitlines())
    if who.get("host") != socket.gethostname():
        return True  # cannot tell: leave it
    try:
        os.kill(int(who["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


# a worker records itself on a trial within milliseconds of starting it; a trial without a worker this long
# after its start lost its worker in between
UNCLAIMED_S = 120.0


def _lost(trial: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial whose worker is gone (killed, cancelled, its node lost)."""
    who = trial.user_attrs.get("worker")
    if who is None:
        started = trial.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() > UNCLAIMED_S
    return not _owner_alive(who)


@contextmanager
def recovery_lock(study_dir: Path) -> Iterator[None]:
    """One process at a time recovers stale trials, so that a lost trial is enqueued once."""
    with (study_dir / "recover.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def recover_stale(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker is gone as failed and enqueue their parameters again (once).
    Workers call this before each trial (under `recovery_lock`), so a live worker retries a dead one's
    trial while the study runs; the driver calls it when a study starts or resumes."""
    from optuna.trial import TrialState

    stale = []
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == TrialState.RUNNING and _lost(t):
            # Optuna has no public call to fail another process's trial; the storage call is what it uses
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            stale.append(t.number)
        lost = t.number in stale or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted"))
        if lost and t.number not in retried and "retry_of" not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return stale


def final_metric(run_dir: Path, metric: str) -> float:
    """The last evaluation's `metric` of a run (its final score)."""
    from common.logger import read_metrics

    rows = read_metrics(run_dir / "eval.jsonl") if (run_dir / "eval.jsonl").exists() else []
    if not rows:
        raise RuntimeError(f"{run_dir} has no evaluation")
    if metric not in rows[-1]:
        raise ConfigError(f"metric {metric!r} is not in the evaluation rows; they have {sorted(rows[-1])}")
    return float(rows[-1][metric])


class Interrupted(KeyboardInterrupt):
    """A trial's run stopped on a signal: the worker stops (the trial fails; a resume tries it again)."""


def run_seed(spec: StudySpec, seed: int, params: dict[str, Any], run_dir: Path, on_eval: Any = None) -> float:
    """Train one run (or reuse it when it already finished) and return its final `metric`."""
    from common.launch import start

    status = run_dir / "status.json"
    if status.exists() and json.loads(status.read_text()).get("state") == "finished":
        return final_metric(run_dir, spec.metric)
    cfg = compose_run(spec.run_overrides(seed, params))
    start(cfg, run_dir, on_eval=on_eval, requeue=False)  # a stopped trial is retried by the study
    if json.loads(status.read_text()).get("state") == "preempted":
        raise Interrupted(f"{run_dir} was stopped by a signal")
    return final_metric(run_dir, spec.metric)


class Objective:
    """Mean final `metric` over the tuning seeds, reporting every evaluation to the pruner."""

    def __init__(self, spec: StudySpec, study_dir: Path) -> None:
        self.spec, self.study_dir = spec, study_dir
        self.space = spec.space

    def __call__(self, trial: optuna.Trial) -> float:
        from common.runtime import EndRun

        trial.set_user_attr("worker", owner())
        params = self.space.suggest(trial)
        scores: dict[str, float] = {}
        step = 0

        for seed in self.spec.tuning_seeds:
            run_dir = self.study_dir / "trials" / f"{trial.number:04d}_s{seed}"

            def on_eval(frame: int, row: dict[str, Any], agent: Any, seed: int = seed) -> None:
                nonlocal step
                value = row.get(self.spec.metric)
                if value is None or not math.isfinite(value):
                    return
                trial.report(float(value), step)
                step += 1
                if trial.should_prune():
                    raise EndRun(f"pruned at evaluation {step} (seed {seed}, frame {frame}): {value:.4g}")

            try:
                scores[str(seed)] = run_seed(self.spec, seed, params, run_dir, on_eval)
            except EndRun as e:
                trial.set_user_attr("scores", scores)
                raise optuna.TrialPruned(str(e)) from e
            except Interrupted:
                trial.set_user_attr("interrupted", True)
                raise
            trial.set_user_attr("scores", scores)
        return sum(scores.values()) / len(scores)


def work(study_dir: str, worker: int) -> int:
    """A worker: run trials until the study has `n_trials`; returns how many this worker ran."""
    path = Path(study_dir)
    spec = StudySpec.load(path)
    study = open_study(spec, path, worker)
    objective = Objective(spec, path)
    ran = 0
    while True:
        with recovery_lock(path):
            stale = recover_stale(study)
        if stale:
            print(f"hpo: trials {stale} were left running by a dead worker: retried", file=sys.stderr)
        if not _to_run(study, spec):
            return ran
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        ran += 1


# ------------------------------------------------------------------------------------------ the driver


def _lock(study_dir: Path) -> Any:
    handle = (study_dir / "driver.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        raise ConfigError(
            f"another process drives the study in {study_dir}; wait for it, or add workers with "
            f"`python -m common.hpo worker {study_dir} N`"
        ) from e
    return handle


def prepare(spec: StudySpec, study_dir: Path) -> None:
    """Check the spec, and that `study_dir` holds no other study; save the spec for the workers."""
    check_spec(spec)
    saved = study_dir / SPEC_FILE
    if saved.exists():
        old = json.loads(saved.read_text())
        differ = [k for k in IDENTITY if old.get(k) != asdict(spec)[k]]
        if differ:
            raise ConfigError(
                f"{study_dir} holds a study with other {', '.join(differ)}; "
                f"pass --study-dir for a new study, or the same settings to resume it"
            )
    study_dir.mkdir(parents=True, exist_ok=True)
    spec.save(study_dir)


def run_study(spec: StudySpec, study_dir: Path) -> dict[str, Any]:
    """Run (or resume) the study, evaluate the best config on the test seeds, write the report."""
    from common.hpo.report import write_report

    prepare(spec, study_dir)
    lock = _lock(study_dir)
    try:
        study = open_study(spec, study_dir)
        # a second round when a worker died after the others had stopped (its trial was left running)
        for _ in range(2):
            with recovery_lock(study_dir):
                stale = recover_stale(study)
            if stale:
                print(f"hpo: trials {stale} were left running by a dead worker: retried", file=sys.stderr)
            if not _to_run(study, spec):
                break
            _run_workers(spec, study_dir)
        try:
            best = study.best_trial
        except ValueError:
            raise RlreproError(
                f"no trial of {study_dir} completed (see the trials' status.json); nothing to test"
            ) from None
        tests = evaluate_test(spec, study_dir, best)
        return write_report(study, spec, study_dir, best, tests)
    finally:
        lock.close()


def _run_workers(spec: StudySpec, study_dir: Path) -> None:
    if spec.launcher == "slurm":
        from common.hpo.slurm import make_executor, submit_array, wait_all

        executor = make_executor(study_dir / ".submitit", launcher_params(spec))
        executor.update_parameters(name=f"hpo-{study_dir.name}")
        n = spec.workers
        jobs = submit_array(executor, work, [str(study_dir)] * n, list(range(n)), what="HPO workers")
        print(f"hpo: {spec.workers} SLURM workers: jobs {[j.job_id for j in jobs]}", file=sys.stderr)
        for result in wait_all(jobs, "HPO worker"):
            if isinstance(result, BaseException):
                print(f"hpo: {result}", file=sys.stderr)  # the study stays intact: run again to resume
        return
    if spec.workers == 1:
        work(str(study_dir), 0)
        return
    logs = study_dir / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    for i in range(spec.workers):
        with (logs / f"worker{i}.log").open("a") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "common.hpo", "worker", str(study_dir), str(i)],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    for i, proc in enumerate(procs):
        if proc.wait() != 0:
            print(f"hpo: worker {i} exited with {proc.returncode}; see {logs}/worker{i}.log", file=sys.stderr)


def evaluate_test(spec: StudySpec, study_dir: Path, best: optuna.trial.FrozenTrial) -> dict[str, float]:
    """Re-run the best trial's config on every test seed (never tuned on); final `metric` per seed."""
    params = dict(best.params)
    dirs = [study_dir / "test" / f"trial{best.number:04d}_s{seed}" for seed in spec.test_seeds]
    if spec.launcher == "slurm":
        from common.hpo.slurm import make_executor, submit_array, wait_all

        executor = make_executor(study_dir / ".submitit", launcher_params(spec))
        executor.update_parameters(name=f"test-{study_dir.name}")
        n = len(spec.test_seeds)
        seeds = spec.test_seeds
        jobs = submit_array(executor, run_seed, [spec] * n, seeds, [params] * n, dirs, what="test runs")
        results = wait_all(jobs, "test run")
    else:
        results = [run_seed(spec, seed, params, d) for seed, d in zip(spec.test_seeds, dirs, strict=True)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RlreproError(f"{len(failed)} test run(s) failed, first: {failed[0]}; run again to retry them")
    return {str(seed): float(score) for seed, score in zip(spec.test_seeds, results, strict=True)}
