"""Test-wide settings: headless GL, one thread, no W&B, datasets in a temp dir (set before any import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("MINARI_DATASETS_PATH", "/tmp/rlrepro-test-minari")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, timeout: float = 300, check: bool = False, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python run.py ARGS` from the repo root and capture its output (`env`: None unsets a variable)."""
    merged = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in merged.items() if v is not None},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def cli():
    return run_cli
