"""SLURM through submitit: checks for `hydra/launcher=slurm` and executors for HPO workers on SLURM.

Both check the request before anything is submitted (a time limit that does not exceed submitit's signal
delay would signal the job at its start) and turn submitit's failures (a job rejected by sbatch, cancelled,
or killed) into one-line errors instead of tracebacks or endless waits.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, RlreproError


class SlurmError(RlreproError):
    """A SLURM job was rejected, cancelled or failed."""


def check_launcher(params: Mapping[str, Any]) -> None:
    """One-line errors for impossible launcher settings (before anything is submitted)."""
    timeout_min, delay = params.get("timeout_min"), params.get("signal_delay_s", 120)
    if not isinstance(timeout_min, int) or timeout_min <= 0:
        raise ConfigError(f"hydra.launcher.timeout_min={timeout_min!r} must be a positive number of minutes")
    if not isinstance(delay, int) or delay < 0:
        raise ConfigError(f"hydra.launcher.signal_delay_s={delay!r} must be a non-negative number of seconds")
    if timeout_min * 60 <= delay:
        raise ConfigError(
            f"hydra.launcher.timeout_min={timeout_min} ({timeout_min * 60} s) does not exceed "
            f"signal_delay_s={delay}: submitit would signal the job as it starts; raise timeout_min to "
            f"at least {delay // 60 + 1} or lower hydra.launcher.signal_delay_s"
        )
    for key in ("cpus_per_task", "gpus_per_node", "mem_gb", "nodes", "tasks_per_node"):
        value = params.get(key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(f"hydra.launcher.{key}={value!r} must be a non-negative integer or null")


_SBATCH_FLAGS = {
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "constraint": "--constraint",
    "exclude": "--exclude",
    "gres": "--gres",
    "cpus_per_task": "--cpus-per-task",
    "gpus_per_node": "--gpus-per-node",
    "gpus_per_task": "--gpus-per-task",
    "nodes": "--nodes",
    "tasks_per_node": "--ntasks-per-node",
    "timeout_min": "--time",
}


def check_request(params: Mapping[str, Any]) -> None:
    """Ask SLURM whether it could ever run this request (`sbatch --test-only`, nothing is queued): an
    impossible one (more CPUs or memory than a node has, an unknown partition) is a one-line error here
    instead of a job pending forever or a traceback. Skipped where there is no `sbatch`."""
    if shutil.which("sbatch") is None:
        return
    args = [f"{flag}={params[key]}" for key, flag in _SBATCH_FLAGS.items() if params.get(key) is not None]
    if params.get("mem_gb") is not None:
        args.append(f"--mem={params['mem_gb']}G")
    try:
        out = subprocess.run(
            ["sbatch", "--test-only", *args, "--wrap", "true"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return  # submitit reports a controller that cannot be reached
    if out.returncode != 0:
        lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
        reason = next((line.split(":", 1)[1].strip() for line in lines if "allocation failure" in line), "")
        reason = reason or (lines[-1] if lines else f"sbatch exit status {out.returncode}")
        raise SlurmError(f"SLURM cannot run this request ({' '.join(args)}): {reason}")


def describe_failure(error: BaseException) -> str:
    """The useful line of a submitit error: sbatch's complaint or the job's final state."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "sbatch: error" in line:
            return line.split("sbatch: error:", 1)[-1].strip()
    for line in lines:
        if "CANCELLED" in line or "Job not requeued" in line or "has not produced any output" in line:
            return line
    return lines[0] if lines else type(error).__name__


def wait_all(jobs: Sequence[Any], what: str) -> list[Any]:
    """Results of submitit `jobs` (each a SlurmError when it failed), waiting for every one."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    results: list[Any] = []
    for job in jobs:
        try:
            results.append(job.result())
        except (UncompletedJobError, FailedJobError) as e:
            state = getattr(job, "state", "UNKNOWN")
            results.append(SlurmError(f"{what} job {job.job_id} ended {state}: {describe_failure(e)}"))
    return results


def submit_array(executor: Any, fn: Any, *args: Sequence[Any], what: str) -> list[Any]:
    """`executor.map_array(fn, *args)`, with sbatch's rejection as a one-line SlurmError."""
    from submitit.core.utils import FailedJobError

    try:
        return list(executor.map_array(fn, *args))
    except FailedJobError as e:
        raise SlurmError(f"SLURM rejected the {what}: {describe_failure(e)}") from e


def make_executor(folder: Path, params: Mapping[str, Any]) -> Any:
    """A submitit SLURM executor with the resources of a composed `hydra.launcher` config."""
    import submitit

    check_launcher(params)
    check_request(params)
    executor = submitit.AutoExecutor(
        folder=str(folder / "%j"), cluster="slurm", slurm_max_num_timeout=params.get("max_num_timeout", 0)
    )
    common = ("timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name")
    skip = {"_target_", "submitit_folder", "max_num_timeout", "stderr_to_stdout", *common}
    kwargs = {k: params[k] for k in common if params.get(k) is not None}
    kwargs.update({f"slurm_{k}": v for k, v in params.items() if k not in skip and v is not None})
    executor.update_parameters(**kwargs)
    return executor


class LauncherCheck(Callback):
    """A Hydra callback that `hydra/launcher=slurm` installs: checks the launcher's settings before any job
    is submitted, and prints a one-line error instead (run.py's format, exit status 2)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        container = OmegaConf.to_container(config.hydra.launcher, resolve=True)
        assert isinstance(container, dict)
        params = {str(k): v for k, v in container.items()}
        try:
            check_launcher(params)
            check_request(params)
        except RlreproError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)  # SystemExit passes through Hydra's error reporting
