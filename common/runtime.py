"""Per-run plumbing shared by every loop: device, seeding, the run directory (its lock) and stop signals."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, RunDirError
from common.registry import ROOT

if TYPE_CHECKING:
    from common.agent import Policy

# Called after every logged evaluation with (frame, eval row, agent): HPO reports intermediate scores through
# it (and may raise to prune), dataset generators snapshot policies.
OnEval = Callable[[int, dict[str, Any], "Policy"], None]


def resolve_device(spec: str) -> torch.device:
    """`auto` → cuda when available, else cpu. Asking for cuda on a machine without it is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(f"device={spec!r} is not a torch device; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec} but CUDA is not available here; use device=auto or device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the resolved config minus `resume`: two runs with equal hashes ran the same thing."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container.pop("resume", None)
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:12]


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    try:
        return {"sha": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


class StopFlag:
    """Set by SIGTERM/SIGUSR2 (SLURM preemption and time limits) and the first Ctrl-C; loops poll it,
    write a checkpoint and return. A second Ctrl-C interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\nreceived {signal.Signals(signum).name}: checkpointing and exiting", file=sys.stderr)

    def __bool__(self) -> bool:
        return self.signal is not None


class EndRun(Exception):
    """Raised by a `RunContext.on_eval` callback to end a run on purpose (e.g. an HPO trial pruned by
    its intermediate scores). `common.launch` records `state` in status.json and re-raises."""

    def __init__(self, reason: str, state: str = "pruned") -> None:
        super().__init__(reason)
        self.state = state


def slurm_job_id() -> str | None:
    """This process's SLURM job as squeue, scancel and scontrol name it, or None outside SLURM. An array
    task is `<array id>_<task id>`: its bare SLURM_JOB_ID can equal the array's id (SLURM gives the array's
    id to one of its tasks), and those commands given the array's id act on every task of the array."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_after_stop(signum: int | None) -> str | None:
    """After a run stopped on SIGUSR2 inside a SLURM job (submitit's and `sbatch --signal` time-limit and
    preemption warning), put the job back in the queue; its next start continues the run from its
    checkpoint. Returns how it was requeued, or None when there is nothing to do.

    `StopFlag` replaces the SIGUSR2 handler while the run lasts; when it exits, the handler that was there
    before is back. Under submitit that handler checkpoints the submission, requeues the job (counting time
    limits against `max_num_timeout`) and exits: the signal is raised again for it and this call does not
    return. Any other SLURM job is requeued with `scontrol requeue`.
    """
    job = slurm_job_id()
    if signum != signal.SIGUSR2 or job is None:
        return None
    if callable(signal.getsignal(signal.SIGUSR2)):
        signal.raise_signal(signal.SIGUSR2)  # submitit: requeues, then sys.exit
        return "handler"
    if not any(a.startswith(("hydra.run.dir=", "resume=")) for a in sys.argv[1:]):
        # the default run directory has a time stamp: a requeued `run.py` would start a new run elsewhere
        print(
            "not requeueing: the run directory is time-stamped; submit with hydra.run.dir=<dir> (or "
            "resume=<dir>) to be requeued, or continue by hand with resume=",
            file=sys.stderr,
        )
        return None
    out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        print(f"could not requeue SLURM job {job}: {out.stderr.strip()}", file=sys.stderr)
        return None
    return "scontrol"


@dataclass
class RunContext:
    """What a loop gets besides the config."""

    run_dir: Path
    device: torch.device
    resuming: bool
    stop: StopFlag
    info: dict[str, Any] = field(default_factory=dict)
    on_eval: OnEval | None = None  # None: nothing to call


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically with `data` as JSON (a reader sees the old or the new file, never half)."""
    tmp = path.with_suffix(".tmp")
    try:
        with tmp.open("w") as f:
            f.write(json.dumps(data, indent=1, default=str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


# What a failed write in a run directory means for the user, by errno.
STORAGE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def storage_problem(error: OSError) -> str:
    """A few words for a failed write: "the disk is full", or the OS's own message."""
    return STORAGE_ERRORS.get(error.errno or 0, error.strerror or str(error))


def whoami() -> dict[str, Any]:
    """This process, as a lock file and status.json name it: pid, host and since when."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class RunLock:
    """An exclusive lock on a run directory while one process writes it (``with RunLock(run_dir): ...``).

    `flock` on `<run_dir>/.lock`, which names the holder (pid, host) while it is held and is empty after;
    the kernel releases the lock when the process exits, however it dies, so a stale file never blocks
    anyone. A second process (e.g. a second `resume=` of the same run) gets a one-line `RunDirError` naming
    the holder and has written nothing.
    On NFS, Linux maps flock to byte-range locks that the server arbitrates between hosts.
    """

    FILE = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / self.FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(
                f"run directory {self.path.parent} cannot be written ({storage_problem(e)}); "
                f"make it writable, or copy the run elsewhere and resume the copy"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"cannot lock run directory {self.path.parent}: {e}") from e
            raise RunDirError(
                f"run directory {self.path.parent} is in use by {describe_holder(holder)}; "
                f"wait for it to end, or stop it first"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(whoami()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # empty while nobody holds it
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the lock
            self._fd = None

    @classmethod
    def held(cls, run_dir: Path) -> bool:
        """Whether a live process holds the lock of `run_dir` (tells a dead "running" run from a live one)."""
        try:
            fd = os.open(run_dir / cls.FILE, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False


def describe_holder(text: str) -> str:
    """ "process 123 on host h (since ...)" from a lock file's content; "another process" if unreadable."""
    try:
        holder = json.loads(text)
        return f"process {holder['pid']} on host {holder['host']} (since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def new_run_info(cfg: DictConfig) -> dict[str, Any]:
    return {
        "paper": cfg.paper.name,
        "env": cfg.env.name,
        "seed": cfg.seed,
        "tag": cfg.tag,
        "config_hash": config_hash(cfg),
        "git": git_state(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "command": os.environ.get("RLREPRO_COMMAND") or " ".join(sys.argv),  # the user's, not submitit's
        "wandb_id": uuid.uuid4().hex[:8],
        "slurm_job_id": slurm_job_id(),  # `<array>_<task>` for an array task: what squeue/scancel take
        "packages": package_versions(),
        "hardware": hardware(),
    }


PACKAGES = (
    "numpy",
    "torch",
    "mujoco",
    "dm-control",
    "gymnasium",
    "hydra-core",
    "omegaconf",
    "minari",
    "wandb",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a run's numbers (None: not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    """CPU model and count, and the GPU when CUDA is visible."""
    info: dict[str, Any] = {"cpu": cpu_name(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def cpu_name() -> str:
    """The CPU model (for benchmark and run provenance)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_pressure() -> float | None:
    """`some avg10` of /proc/pressure/cpu: the share of time runnable tasks waited for a CPU (%), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None
