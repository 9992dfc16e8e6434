"""Test-wide settings: headless GL, one thread, no W&B, datasets in a temp dir (set before any import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["WANDB_MODE"] = "disabled"
# one dataset directory per pytest-xdist worker: two workers never write the same Minari dataset
os.environ.setdefault(
    "MINARI_DATASETS_PATH", f"/tmp/rlrepro-test-minari-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
)

import pytest  # noqa: E402
import torch  # noqa: E402

if TYPE_CHECKING:
    from common.offline.data import OfflineData

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup` (make test), the tests of the one-node SLURM cluster run on one
    worker, one after another: two workers' jobs would queue behind each other past their timeouts."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))


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


def metric_rows(path: Path) -> list[dict]:
    """Rows of a metrics file without the wall-clock fields (those differ between identical runs)."""
    from common.logger import TIME_KEYS, read_metrics

    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in read_metrics(path)]


def assert_kill_and_resume_identical(args: tuple[str, ...], tmp_path: Path, poll_s: float = 0.02) -> None:
    """Run `args` once uninterrupted; run it again, SIGKILL it once its first checkpoint exists, resume
    it, and assert both runs end with identical train/eval rows and final score."""
    import json
    import signal
    import time

    full, killed = tmp_path / "full", tmp_path / "killed"
    run_cli(*args, f"hydra.run.dir={full}", check=True)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={killed}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "latest").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(poll_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "status.json").read_text())["state"] == "running"  # really interrupted

    run_cli(f"resume={killed}", check=True)
    assert_runs_identical(full, killed)


def assert_runs_identical(expected: Path, run_dir: Path) -> None:
    """`run_dir` logged exactly the train and eval rows of `expected` (wall-clock fields aside), row by row,
    and ended with the same score."""
    import json

    for name in ("eval.jsonl", "train.jsonl"):
        want, got = metric_rows(expected / name), metric_rows(run_dir / name)
        assert len(got) == len(want), f"{name}: {len(got)} rows, expected {len(want)}"
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert a == b, f"{name} row {i} differs: {a} != {b}"
    assert (
        json.loads((run_dir / "status.json").read_text())["score"]
        == json.loads((expected / "status.json").read_text())["score"]
    )


@pytest.fixture(scope="session")
def tiny_d4rl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny D4RL-protocol datasets for hopper made once per test session by `paper=d4rl debug=smoke`
    (400 SAC frames, 1000 transitions per split). Returns {"root": MINARI_DATASETS_PATH, "run": run dir};
    pass ``env={"MINARI_DATASETS_PATH": str(root)}`` to `run_cli` to train from them."""
    root = tmp_path_factory.mktemp("minari")
    run = tmp_path_factory.mktemp("d4rl_run") / "hopper"
    run_cli(
        "paper=d4rl",
        "env=hopper",
        "debug=smoke",
        "paper.datasets.size=1000",
        f"hydra.run.dir={run}",
        env={"MINARI_DATASETS_PATH": str(root)},
        check=True,
    )
    return {"root": root, "run": run}


def pendulum_dataset(n: int = 1000) -> OfflineData:
    """A random Pendulum-shaped offline dataset (episodes of 200 steps) for loop tests without Minari."""
    import numpy as np

    from common.offline.data import OfflineData

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, 3)).astype(np.float32)
    truncations = np.zeros(n, bool)
    truncations[199::200] = True
    return OfflineData(
        observations=obs[:-1],
        actions=rng.uniform(-1, 1, (n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs[1:],
        terminations=np.zeros(n, bool),
        truncations=truncations,
        episode_starts=np.arange(0, n, 200, dtype=np.int64),
        metadata={"ref_min_score": -1200.0, "ref_max_score": -150.0},
    )
