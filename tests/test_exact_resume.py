"""A run stopped at any point and resumed logs exactly the rows of a run never stopped.

Each interrupted run is a forked copy of this process (no interpreter start-up: the whole file stays within
a minute of CPU) that signals itself at an agent step drawn from a seeded RNG: SIGTERM and SIGUSR2 (graceful:
the run checkpoints where it is, mid-episode included) or SIGKILL (hard: the resume starts from the last
checkpoint). The online (SAC on Pendulum), offline (TD+BC) and streaming (stream AC on InvertedPendulum) loops
are each compared row by row, train and eval, with one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Load in this process what every forked run needs, so that none pays for it again: the papers and envs,
# and the optimizer machinery torch imports lazily on the first `Adam(...)` (seconds).
import gymnasium.envs.mujoco  # noqa: E402, F401
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import papers.sac.agent  # noqa: E402, F401
import papers.stream_ac.agent  # noqa: E402, F401
import papers.td3bc.agent  # noqa: E402, F401
from common import launch
from common.logger import read_metrics
from common.registry import CONF_DIR
from common.session import RunSession
from tests.conftest import assert_runs_identical, pendulum_dataset

torch.optim.Adam([torch.zeros(1, requires_grad=True)])


SMALL = "paper.agent.hidden_dim=32"  # smaller networks, same code paths
ONLINE = ("paper=sac", "env=pendulum", "paper.train.num_frames=400", SMALL)  # 100-step episodes (smoke)
OFFLINE = ("paper=td3bc", "env=pendulum", "dataset=medium", "paper.train.log_every_steps=30",
           "paper.train.eval_every_steps=50", SMALL)  # fmt: skip  # rows between checkpoints: sums carried
STREAM = ("paper=stream_ac", "env=inverted_pendulum", "paper.train.num_frames=400", SMALL)
LOOPS = {"online": ONLINE, "offline": OFFLINE, "stream": STREAM}
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGUSR2": signal.SIGUSR2, "SIGKILL": signal.SIGKILL}


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["debug=smoke", "logger.progress=false", *overrides])


def _in_child(body: Callable[[], Any]) -> int:
    """Run `body` in a forked copy of this process; its exit status (-N: killed by signal N)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _signal_at_step(step: int, sig: int) -> None:
    """From now on (in a child), this process signals itself right after agent/gradient step `step`."""
    advance = RunSession.advance

    def advance_then_signal(self: RunSession) -> None:
        advance(self)
        if self.c["step"] == step:
            os.kill(os.getpid(), sig)

    RunSession.advance = advance_then_signal  # type: ignore[method-assign]


def _signal_in_evaluation(number: int, sig: int) -> None:
    """From now on (in a child), evaluation number `number` (from 1) is cut by `sig` before its first step."""
    evaluate, calls = RunSession.evaluate, [0]

    def signal_then_evaluate(self: RunSession, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == number:
            os.kill(os.getpid(), sig)
        return evaluate(self, *args)

    RunSession.evaluate = signal_then_evaluate  # type: ignore[method-assign]


def _start(cfg: DictConfig, run_dir: Path) -> None:
    launch.start(cfg, run_dir, requeue=False)


def _resume_to_the_end(run_dir: Path) -> None:
    assert _in_child(lambda: launch.resume(run_dir, [], requeue=False)) == 0
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def _latest_state(run_dir: Path) -> dict[str, Any]:
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    return torch.load(ckpt / "state.pt", weights_only=True)


@pytest.fixture
def offline_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generated Pendulum dataset in place of a Minari one (the forked runs inherit the patch)."""
    import common.offline.loop

    monkeypatch.setattr(common.offline.loop, "read_info", lambda env, split: {"run_dir": "test"})
    monkeypatch.setattr(common.offline.loop, "load_dataset", lambda env, split, spec: pendulum_dataset())


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Each loop's uninterrupted run, made once."""
    import common.offline.loop

    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(common.offline.loop, "read_info", lambda env, split: {"run_dir": "test"})
        mp.setattr(common.offline.loop, "load_dataset", lambda env, split, spec: pendulum_dataset())
        for name, args in LOOPS.items():
            run_dir = tmp_path_factory.mktemp(name) / "run"
            cfg = _compose(*args)
            assert _in_child(lambda cfg=cfg, run_dir=run_dir: _start(cfg, run_dir)) == 0
            runs[name] = run_dir
        yield runs


def _stop_steps(full: Path, loop: str, count: int, seed: str, checkpoint_step: int = 200) -> list[int]:
    """`count` random steps (from a generator seeded by `seed`: the same in every session) after the first
    checkpoint (the first episode end from `checkpoint_step` on: a SIGKILL resumes from it) where a stop lands
    inside an episode (not on the step that ends one); offline, where the last checkpoint holds update
    metrics not yet logged."""
    train = read_metrics(full / "train.jsonl")
    last = train[-1]["step"]
    if loop == "offline":  # checkpoints every 50 steps, rows every 30
        steps = [s for s in range(51, last) if (s // 50 * 50) % 30 != 0]
    else:
        ends = {row["step"] for row in train}
        first = min(s for s in ends if s >= checkpoint_step)
        steps = [s for s in range(first + 1, last) if s not in ends]
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    return sorted(int(s) for s in rng.choice(steps, size=count, replace=False))


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("loop", LOOPS)
def test_a_stopped_run_resumes_to_the_rows_of_an_uninterrupted_one(
    loop: str, sig: str, full_runs: dict[str, Path], offline_data: None, tmp_path: Path
) -> None:
    run_dir, cfg = tmp_path / "run", _compose(*LOOPS[loop])
    (step,) = _stop_steps(full_runs[loop], loop, 1, seed=f"{loop}-{sig}")

    def interrupted() -> None:
        _signal_at_step(step, SIGNALS[sig])
        _start(cfg, run_dir)

    status = _in_child(interrupted)
    if sig == "SIGKILL":
        assert status == -signal.SIGKILL
    else:  # graceful: a checkpoint right where the signal landed, inside an episode
        assert status == 0 and json.loads((run_dir / "status.json").read_text())["state"] == "preempted"
        state = _latest_state(run_dir)
        assert state["counters"]["step"] == step
        if loop != "offline":
            assert state["mid_episode"] and "episode" in state
    _resume_to_the_end(run_dir)
    assert_runs_identical(full_runs[loop], run_dir)


@pytest.mark.parametrize("loop", ["online", "stream"])
def test_three_stops_in_one_run_resume_exactly(loop: str, full_runs: dict[str, Path], tmp_path: Path) -> None:
    """SIGUSR2, then SIGTERM in the resumed run, then SIGKILL (back to the SIGTERM checkpoint or a later
    periodic one), then to the end."""
    run_dir, cfg = tmp_path / "run", _compose(*LOOPS[loop])
    usr2, term, kill = _stop_steps(full_runs[loop], loop, 3, seed=f"{loop}-three")

    def first() -> None:
        _signal_at_step(usr2, signal.SIGUSR2)
        _start(cfg, run_dir)

    def resumed(step: int, sig: int) -> Callable[[], None]:
        def body() -> None:
            _signal_at_step(step, sig)
            launch.resume(run_dir, [], requeue=False)

        return body

    assert _in_child(first) == 0
    assert _in_child(resumed(term, signal.SIGTERM)) == 0
    assert _in_child(resumed(kill, signal.SIGKILL)) == -signal.SIGKILL
    _resume_to_the_end(run_dir)
    assert_runs_identical(full_runs[loop], run_dir)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_signal_during_an_evaluation_resumes_exactly(
    loop: str, full_runs: dict[str, Path], offline_data: None, tmp_path: Path
) -> None:
    run_dir, cfg = tmp_path / "run", _compose(*LOOPS[loop])

    def interrupted() -> None:
        _signal_in_evaluation(2, signal.SIGTERM)  # the first after step 0: online, at an episode boundary
        _start(cfg, run_dir)

    assert _in_child(interrupted) == 0
    assert len(read_metrics(run_dir / "eval.jsonl")) == 1  # the cut evaluation logged nothing
    _resume_to_the_end(run_dir)
    assert_runs_identical(full_runs[loop], run_dir)


def test_an_env_without_state_keeps_the_exact_checkpoint(
    full_runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An env that cannot save its state: a stop mid-episode (here: the evaluation right after a periodic
    checkpoint) writes nothing, says so, and the resume repeats the steps since that checkpoint."""
    import common.loop

    run_dir, cfg = tmp_path / "run", _compose(*ONLINE)

    def interrupted() -> None:
        common.loop.env_state = lambda env: None  # type: ignore[assignment]
        _signal_in_evaluation(2, signal.SIGTERM)
        _start(cfg, run_dir)

    assert _in_child(interrupted) == 0
    assert "cannot save its state mid-episode" in capfd.readouterr().err
    state = _latest_state(run_dir)
    assert not state["mid_episode"] and state["counters"]["step"] <= 200  # the periodic one, untouched
    _resume_to_the_end(run_dir)
    assert_runs_identical(full_runs["online"], run_dir)


@pytest.mark.slow
def test_a_pixel_run_stopped_mid_episode_resumes_exactly(tmp_path_factory: pytest.TempPathFactory) -> None:
    """DrQ-v2 from pixels: the frame stack and the rendered observation come back with the physics."""
    args = ("paper=drqv2", "env=cheetah_run", "paper.train.num_frames=400")
    full, run_dir = tmp_path_factory.mktemp("full") / "run", tmp_path_factory.mktemp("stopped") / "run"
    cfg = _compose(*args)
    assert _in_child(lambda: _start(cfg, full)) == 0
    (step,) = _stop_steps(full, "drqv2", 1, seed="drqv2-SIGTERM", checkpoint_step=100)  # action repeat 2

    def interrupted() -> None:
        _signal_at_step(step, signal.SIGTERM)
        _start(cfg, run_dir)

    assert _in_child(interrupted) == 0
    assert _latest_state(run_dir)["mid_episode"]
    _resume_to_the_end(run_dir)
    assert_runs_identical(full, run_dir)
