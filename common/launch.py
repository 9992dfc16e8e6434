"""From a composed config to a finished run: the run directory, the paper's loop, and the exit status.

`run.py` calls `start()` for a new run and `resume()` for `resume=<run_dir>`. A paper's loop is the dotted
path `paper.loop`; its agent is `paper.entry`. Nothing here names a paper.

`status.json` tells what became of a run: `running` (with the pid and host that write it), `finished` (with
its score), `preempted` (stopped by a signal, with a checkpoint), `diverged` (a non-finite loss, action or
weight; `latest` is the last finite checkpoint), `failed` (with the error), `pruned` (HPO), or
`interrupted` (killed before its first checkpoint: the status holds the command that starts it again in
place). One process at a time writes a run directory (`runtime.RunLock`); `read_status` tells a "running"
run whose process died from a live one. A resume never changes a finished run's record.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.config import resolved_yaml
from common.errors import CheckpointError, ConfigError, Diverged, RunDirError
from common.registry import Loop, import_loop
from common.runtime import (
    STORAGE_ERRORS,
    EndRun,
    OnEval,
    RunContext,
    RunLock,
    StopFlag,
    config_hash,
    new_run_info,
    requeue_after_stop,
    resolve_device,
    seed_everything,
    storage_problem,
    whoami,
    write_json,
)

CONFIG_FILE = "config.yaml"
INFO_FILE = "run.json"
STATUS_FILE = "status.json"


def start(cfg: DictConfig, run_dir: Path, on_eval: OnEval | None = None, requeue: bool = True) -> float:
    """Start a new run in `run_dir`, or continue it when it holds this very config (a SLURM requeue).

    `on_eval(frame, eval_row, agent)` is called after every logged evaluation (HPO reports through it).
    `requeue=False`: after a stop signal inside a SLURM job, return instead of requeueing the job (HPO
    workers record the interrupted trial themselves, and a later run of the study retries it).

    The config is validated (`paper.loop`'s `validate`) here and only here, once per run: before the run
    directory is written. A requeued or resumed run continues the saved config, which passed then.
    """
    text = resolved_yaml(cfg)  # unresolvable or unset values fail before anything is written
    resolve_device(cfg.device)  # device=cuda on a machine without one: refused before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        same = config_hash(_config(saved.read_text())) == config_hash(cfg)
        if not same:
            raise ConfigError(
                f"run directory {run_dir} already holds another run; choose a new hydra.run.dir"
            )
        if (run_dir / "checkpoints").exists():
            return resume(run_dir, [], on_eval, requeue)
        # killed before its first checkpoint (e.g. a requeued job): nothing to continue, start it again here
        for name in ("train.jsonl", "eval.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        info_path = run_dir / INFO_FILE
        info = json.loads(info_path.read_text()) if info_path.exists() else new_run_info(cfg)
        return _run(_config(text), run_dir, False, info, on_eval, requeue)
    validated_loop(cfg)  # impossible sizes fail before the run directory is written
    saved.write_text(text)
    info = new_run_info(cfg)
    write_json(run_dir / INFO_FILE, info)
    return _run(_config(text), run_dir, False, info, on_eval, requeue)


def validated_loop(cfg: DictConfig) -> Loop:
    """`paper.loop`, after its `validate(cfg)` passed (one-line ConfigErrors otherwise)."""
    from common.session import stop_target

    stop_target(cfg)
    loop = import_loop(cfg.paper.loop)
    loop.validate(cfg)
    return loop


def _config(text: str) -> DictConfig:
    """A config from its saved YAML (what the run directory's config.yaml holds)."""
    cfg = OmegaConf.create(text)
    assert isinstance(cfg, DictConfig)
    return cfg


def load_run_config(run_dir: Path) -> DictConfig:
    """The saved config of `run_dir`; one-line ConfigErrors when it is missing or not YAML."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"resume={run_dir}: no {CONFIG_FILE} there; pass a run directory made by run.py")
    try:
        return _config(path.read_text())
    except Exception as e:  # a YAML syntax error, or a file that is not a mapping
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"resume={run_dir}: {CONFIG_FILE} is not a valid config ({first}); it was edited after the run "
            f"started: restore it"
        ) from e


def check_unchanged(run_dir: Path, cfg: DictConfig, info: dict) -> None:
    """Refuse a saved config that no longer hashes to run.json's `config_hash` (edited by hand): a resume
    continues what the run was started with, so an edit would be silently ignored or half-applied."""
    recorded = info.get("config_hash")
    if recorded is not None and config_hash(cfg) != recorded:
        raise ConfigError(
            f"resume={run_dir}: {CONFIG_FILE} was changed after the run started (its hash is "
            f"{config_hash(cfg)}, run.json records {recorded}); restore it, or start a new run with "
            f"the change"
        )


def read_status(run_dir: Path) -> dict:
    """`status.json` of `run_dir` ({} when absent or unreadable), with a "running" run whose process is gone
    (no process holds its lock) reported as `interrupted`."""
    status = _saved_status(run_dir)
    if status.get("state") == "running" and not RunLock.held(run_dir):
        has_checkpoint = (run_dir / "checkpoints" / "latest").exists()
        return {**status, "state": "interrupted", "checkpoint": has_checkpoint}
    return status


def _saved_status(run_dir: Path) -> dict:
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def restart_command(run_dir: Path) -> str:
    """The command that starts `run_dir` again in place: its overrides (Hydra's record) and its directory."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides: list[str] = []
    if overrides_file.exists():
        try:
            loaded = OmegaConf.load(overrides_file)
            overrides = [str(o) for o in loaded] if isinstance(loaded, ListConfig) else []
        except Exception:  # unreadable: fall back to the directory alone
            overrides = []
    args = [a for a in overrides if not a.startswith(("hydra.run.dir=", "resume="))]
    return shlex.join(["python", "run.py", *args, f"hydra.run.dir={run_dir}"])


def resume(
    run_dir: Path, overrides: Sequence[str], on_eval: OnEval | None = None, requeue: bool = True
) -> float:
    """Continue `run_dir` with its saved config. Only `paper=`/`env=` naming the same choices may be given."""
    cfg = load_run_config(run_dir)
    for override in overrides:
        key, _, value = override.partition("=")
        if key in ("paper", "env"):
            saved = cfg.paper.name if key == "paper" else cfg.env.name
            if value != saved and not str(saved).startswith(value + "_"):
                raise ConfigError(
                    f"resume={run_dir} was made with {key}={saved}, not {key}={value}: "
                    f"drop {key}= or resume a {value} run"
                )
        else:
            raise ConfigError(
                f"resume continues a run with its saved config; remove '{override}' "
                f"(or start a new run with it)"
            )
    info_path = run_dir / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else new_run_info(cfg)
    check_unchanged(run_dir, cfg, info)
    return _run(cfg, run_dir, True, info, on_eval, requeue)


def _run(
    cfg: DictConfig, run_dir: Path, resuming: bool, info: dict, on_eval: OnEval | None, requeue: bool
) -> float:
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    with RunLock(run_dir):  # one writer per run directory: a second process stops here, writing nothing
        previous = _saved_status(run_dir)  # "running" here: its process died (we hold the lock)
        if resuming and not (run_dir / "checkpoints").exists():
            raise _nothing_to_resume(run_dir, previous)
        device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        loop = import_loop(cfg.paper.loop)  # validated when the run directory was written: not again
        # A finished run's record (state, score) stays as it is, whatever a later resume does.
        record = _Record(run_dir, keep=previous.get("state") == "finished")
        status = {"state": "running", "started": time.time(), "resumed": resuming, **whoami()}
        record.write(status)
        with StopFlag() as stop:
            ctx = RunContext(
                run_dir=run_dir, device=device, resuming=resuming, stop=stop, info=info, on_eval=on_eval
            )
            try:
                score = loop(cfg, ctx)
            except EndRun as e:  # ended on purpose by on_eval (an HPO trial pruned): not a failure
                record.write({**status, "state": e.state, "ended": time.time(), "reason": str(e)})
                raise
            except Diverged as e:
                record.write({**status, "state": "diverged", "ended": time.time(), "error": str(e)})
                raise
            except BaseException as e:
                if isinstance(e, OSError) and e.errno in STORAGE_ERRORS:  # e.g. a full disk under a row
                    error = RunDirError(f"cannot write in {run_dir}: {storage_problem(e)} ({e})")
                    record.write({**status, "state": "failed", "ended": time.time(), "error": str(error)})
                    raise error from e
                record.write({**status, "state": "failed", "error": f"{type(e).__name__}: {e}"})
                raise
        state = "preempted" if stop else "finished"
        final = score if math.isfinite(score) else None  # no evaluation finished yet: null, not NaN
        record.write({**status, "state": state, "ended": time.time(), "score": final})
    if stop:
        print(f"stopped with a checkpoint; continue with: python run.py resume={run_dir}", file=sys.stderr)
        if requeue:
            requeue_after_stop(stop.signal)  # inside a SLURM job: back in the queue, resumes from here
        sweep = _local_multirun_dir()
        if sweep is not None:  # Ctrl-C or kill on a local sweep stops the sweep, not just this job
            name = signal.Signals(stop.signal).name if stop.signal is not None else "a signal"
            print(
                f"the multirun stops here on {name}: the jobs after this one were not started; run the same "
                f"command with hydra.sweep.dir={sweep} to continue (finished runs are kept, stopped ones "
                f"resume)",
                file=sys.stderr,
            )
            sys.exit(1)  # run.py lists the runs that did not finish (common.command.report_failed_multirun)
    return score


def _local_multirun_dir() -> str | None:
    """The sweep directory when this run is a job of a multirun that Hydra's basic launcher runs in this
    process (one job after another); None for a single run or a SLURM job (its own process)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN or "BasicLauncher" not in str(hc.launcher.get("_target_", "")):
        return None
    return str(hc.sweep.dir)


class _Record:
    """Writes status.json, unless `keep` (a finished run's record); a write that fails (full disk) is
    skipped: the error that stops the run is reported anyway."""

    def __init__(self, run_dir: Path, keep: bool) -> None:
        self.path, self.keep = run_dir / STATUS_FILE, keep

    def write(self, status: dict) -> None:
        if self.keep:
            return
        try:
            write_json(self.path, status)
        except OSError as e:
            if status["state"] == "running":  # nothing has run yet: refuse before training
                raise RunDirError(f"cannot write {self.path}: {storage_problem(e)} ({e.strerror})") from e


def _nothing_to_resume(run_dir: Path, previous: dict) -> CheckpointError:
    """The error for a resume of a run without checkpoints; a run whose process died before its first
    checkpoint is recorded as `interrupted`, with the command that starts it again in place."""
    command = restart_command(run_dir)
    if previous.get("state") in ("running", "interrupted"):
        reason = "killed before its first checkpoint: nothing to resume"
        record = {**previous, "state": "interrupted", "reason": reason, "restart": command}
        with contextlib.suppress(OSError):  # a read-only directory: the line below says it all the same
            write_json(run_dir / STATUS_FILE, record)
        return CheckpointError(f"resume={run_dir}: the run was {reason}; start it again in place: {command}")
    return CheckpointError(
        f"resume={run_dir}: the run has no checkpoints/ yet; start it again in place: {command}"
    )
