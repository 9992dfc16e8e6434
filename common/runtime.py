"""Per-run plumbing shared by every loop: device, seeding, the run directory and stop signals."""

from __future__ import annotations

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

from common.errors import ConfigError
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


def requeue_after_stop(signum: int | None) -> str | None:
    """After a run stopped on SIGUSR2 inside a SLURM job (submitit's and `sbatch --signal` time-limit and
    preemption warning), put the job back in the queue; its next start continues the run from its
    checkpoint. Returns how it was requeued, or None when there is nothing to do.

    `StopFlag` replaces the SIGUSR2 handler while the run lasts; when it exits, the handler that was there
    before is back. Under submitit that handler checkpoints the submission, requeues the job (counting time
    limits against `max_num_timeout`) and exits: the signal is raised again for it and this call does not
    return. Any other SLURM job is requeued with `scontrol requeue`.
    """
    if signum != signal.SIGUSR2 or "SLURM_JOB_ID" not in os.environ:
        return None
    if callable(signal.getsignal(signal.SIGUSR2)):
        signal.raise_signal(signal.SIGUSR2)  # submitit: requeues, then sys.exit
        return "handler"
    job = os.environ["SLURM_JOB_ID"]
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


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
        "command": " ".join(sys.argv),
        "wandb_id": uuid.uuid4().hex[:8],
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
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
