"""The typed seams of the run loops: `Loop` (validated once per run), and the `RunSession` skeleton the
online and offline loops share (resume, evaluate, log, checkpoint, stop)."""

from __future__ import annotations

import json
import pickle
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from common import launch, registry
from common.envs.base import Step
from common.errors import ConfigError
from common.logger import read_metrics
from common.registry import CONF_DIR, Loop, import_loop, loop
from common.runtime import RunContext, StopFlag
from common.session import RunSession
from tests.conftest import pendulum_dataset


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["debug=smoke", "logger.progress=false", *overrides])


# ------------------------------------------------------------------------------------------------- Loop


def _check(cfg: DictConfig) -> None:
    if cfg.seed < 0:
        raise ConfigError("seed must be >= 0")


@loop(validate=_check)
def _train(cfg: DictConfig, ctx: RunContext) -> float:
    return 1.0


def test_the_loop_decorator_returns_the_function_with_its_checks(monkeypatch):
    assert _train.validate is _check and _train.__name__ == "_train"
    assert pickle.loads(pickle.dumps(_train)) is _train  # still importable by name (e.g. by submitit)
    monkeypatch.setitem(registry._TRUSTED, __name__.split(".")[0], None)  # trust_package, for this test
    assert import_loop(f"{__name__}._train") is _train


def test_import_loop_refuses_what_is_not_a_loop():
    with pytest.raises(ConfigError, match="is not a run loop"):
        import_loop("common.loop.build_env")  # callable, but without validate


# ------------------------------------------------------------------------------- validated once, not twice


class _Counter:
    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def _start_resume_restart(cfg: DictConfig, run_dir: Path, counter: _Counter) -> None:
    """A new run, a resume of it, and a requeued start of it: validated once in all."""
    launch.start(cfg, run_dir)
    assert counter.calls == 1, "a new run is validated exactly once (not again inside the loop)"
    launch.resume(run_dir, [])
    launch.start(cfg, run_dir)  # a requeued job: same config, checkpoints exist -> a resume
    assert counter.calls == 1, "a resume continues the saved, validated config"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_an_online_run_is_validated_once(tmp_path, monkeypatch):
    import common.loop

    counter = _Counter(common.loop.validate_run)  # every online loop's validate calls it
    monkeypatch.setattr(common.loop, "validate_run", counter)
    cfg = _compose("paper=sac", "env=pendulum", "paper.train.num_frames=200")
    _start_resume_restart(cfg, tmp_path / "run", counter)


@pytest.mark.parametrize("paper", ["td3bc", "bc"])
def test_an_offline_run_is_validated_once(paper, tmp_path, monkeypatch):
    import common.offline.loop
    import papers.bc.loop

    counter = _Counter(common.offline.loop.check_split)  # every offline loop's validate calls it
    monkeypatch.setattr(common.offline.loop, "check_split", counter)
    monkeypatch.setattr(common.offline.loop, "read_info", lambda env, split: {"run_dir": "test"})
    for module in (common.offline.loop, papers.bc.loop):
        monkeypatch.setattr(module, "load_dataset", lambda env, split, spec: pendulum_dataset())
    cfg = _compose(f"paper={paper}", "env=pendulum", "dataset=medium", "paper.train.num_steps=100")
    _start_resume_restart(cfg, tmp_path / "run", counter)


# ------------------------------------------------------------------------------------------ RunSession


class _Rng:
    def __init__(self) -> None:
        self.n = 0

    def get_rng_state(self) -> dict[str, Any]:
        return {"n": self.n}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])


class _Env(_Rng):
    """Episodes of 3 steps, reward 1 each; each reset draws from the RNG; `on_step` is called every step."""

    def __init__(self) -> None:
        super().__init__()
        self.t, self.on_step = 0, lambda: None

    def reset(self) -> Step:
        self.n, self.t = self.n + 1, 0
        return Step(obs=np.zeros(1, np.float32))

    def step(self, action: np.ndarray) -> Step:
        self.t += 1
        self.on_step()
        return Step(np.zeros(1, np.float32), 1.0, self.t == 3, False, float(self.t), self.t)


class _Agent:
    def __init__(self) -> None:
        self.w = torch.zeros(1)

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        return np.zeros(1, np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = state["w"].clone()


CFG = OmegaConf.create(
    {
        "paper": {"name": "p"},
        "env": {"name": "e"},
        "checkpoint": {"keep": 2},
        "logger": {"progress": False, "wandb": {"enabled": False}},
    }
)


def _session(
    run_dir: Path, resuming: bool, agent: _Agent, env: _Env, counters: dict, **ctx: Any
) -> RunSession:
    context = RunContext(run_dir, torch.device("cpu"), resuming, StopFlag(), {"wandb_id": "t"}, **ctx)
    return RunSession(
        CFG,
        context,
        agent,
        counters,
        total_steps=10,
        frames_per_step=2,
        expect={"paper": "p"},
        rngs={"e": env},
    )


def test_a_session_resumes_what_it_saved(tmp_path):
    agent, env, frames = _Agent(), _Env(), []
    run = _session(tmp_path, False, agent, env, {"step": 0, "elapsed": 0.0, "x": 1})
    assert run.resumed is None
    assert run.evaluate(env, 0, episodes=2) == {"episode_return": 3.0, "episode_length": 3.0}
    run.log_eval(0, {"frame": 0, "episode_return": 3.0})
    for _ in range(3):
        run.advance()
    run.log_train({"frame": 6, "episode_return": 1.0})
    run.c["x"], agent.w = 5, torch.ones(1)
    path = run.save(mid_episode=True)
    assert path.name == "frame_0000000006"  # frames = steps x frames_per_step
    run.log_train({"frame": 8, "episode_return": 1.0})  # after the checkpoint: dropped on resume
    torch.rand(1)
    run.close()

    agent2, env2, counters = _Agent(), _Env(), {"step": 0, "elapsed": 0.0, "x": 1}
    run2 = _session(tmp_path, True, agent2, env2, counters, on_eval=lambda f, row, a: frames.append(f))
    assert counters["step"] == 3 and counters["x"] == 5 and counters["elapsed"] >= 0.0
    assert run2.resumed is not None and run2.resumed["mid_episode"] is True
    assert env2.n == 2 and torch.equal(agent2.w, torch.ones(1))
    assert [r["frame"] for r in read_metrics(tmp_path / "train.jsonl")] == [6]
    run2.log_eval(3, {"frame": 6, "episode_return": 3.0})
    assert frames == [6]  # on_eval gets frames
    run2.close()


def test_a_signal_cuts_an_evaluation_and_rewinds_its_env(tmp_path):
    agent, env = _Agent(), _Env()
    run = _session(tmp_path, False, agent, env, {"step": 0, "elapsed": 0.0})

    def signal_arrives() -> None:
        if env.n == 2:  # in the second episode
            run.ctx.stop.signal = 15

    env.on_step = signal_arrives
    assert run.evaluate(env, 0, episodes=3) is None
    assert env.n == 0 and run.stopped  # the evaluation repeats exactly on resume
    run.close()


def test_loops_are_loops():
    """Every paper's loop (and the shared ones) has the `validate` a run calls before it writes anything."""
    import common.loop
    import common.offline.loop
    from common.registry import config_choices, import_entry

    loops: list[Loop] = [
        common.loop.train_online,
        common.loop.train_stream,
        common.offline.loop.train_offline,
    ]
    for paper in config_choices("paper"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            p = compose(config_name="config", overrides=[f"paper={paper}", "env=pendulum"]).paper
        loops.append(import_entry(p.loop))
    bad = [run for run in loops if not callable(getattr(run, "validate", None))]
    assert not bad, f"loops without validate(cfg): {bad}"


def _members(protocol: type) -> set[str]:
    """The methods a protocol asks for, its bases' included (`__init__` aside)."""
    protocols = [
        c for c in protocol.__mro__ if getattr(c, "_is_protocol", False) and c.__module__ != "typing"
    ]
    return {name for c in protocols for name in vars(c) if not name.startswith("_")}


def test_every_paper_agent_keeps_the_contract_of_its_loop():
    from common.agent import Agent, OfflineAgent, StreamAgent
    from common.registry import config_choices, import_entry

    contracts = {
        "common.loop.train_online": Agent,
        "common.loop.train_stream": StreamAgent,
        "common.offline.loop.train_offline": OfflineAgent,
        "papers.bc.loop.train": OfflineAgent,
        "papers.dual_rl.loop.train": OfflineAgent,
        "papers.ssorl.loop.train": OfflineAgent,
    }
    assert _members(OfflineAgent) == {"act", "state_dict", "load_state_dict", "update", "prepare"}
    checked = []
    for paper in config_choices("paper"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            p = compose(config_name="config", overrides=[f"paper={paper}", "env=pendulum"]).paper
        if p.loop in contracts:
            entry = import_entry(p.entry)
            if not isinstance(entry, type):  # a factory (MEX builds TD3's agent with a term): its return type
                entry = typing.get_type_hints(entry)["return"]
            missing = _members(contracts[p.loop]) - set(dir(entry))
            assert not missing, f"{p.entry} lacks {sorted(missing)} ({p.loop} calls them)"
            checked.append(paper)
    expected = {
        "sac",
        "drqv2",
        "drm",
        "td3bc",
        "iql",
        "bc",
        "stream_ac",
        "td3",
        "mex",
        "xql",
        "dual_rl",
        "cql",
        "ssorl",
    }
    assert expected <= set(checked)


def test_a_game_of_several_lives_is_one_train_row(tmp_path, monkeypatch):
    """Atari's training env ends an episode at each lost life (`info["game_over"]` False) and its next reset
    continues the game: the loop logs one train row, and counts one episode, per game."""
    import common.loop

    class Lives:  # every other episode end is a lost life, not the end of the game
        def __init__(self, env: Any) -> None:
            self._env, self.spec, self.ends = env, env.spec, 0

        def reset(self) -> Step:
            return self._env.reset()

        def step(self, action: np.ndarray) -> Step:
            ts = self._env.step(action)
            if ts.done:
                self.ends += 1
                ts.info = {**ts.info, "game_over": self.ends % 2 == 0}
            return ts

        def get_rng_state(self) -> dict[str, Any]:
            return self._env.get_rng_state()

        def set_rng_state(self, state: dict[str, Any]) -> None:
            self._env.set_rng_state(state)

        def close(self) -> None:
            self._env.close()

    build = common.loop.build_env
    monkeypatch.setattr(common.loop, "build_env", lambda cfg, seed, evaluation=False: Lives(build(cfg, seed)))
    cfg = _compose("paper=sac", "env=pendulum", "paper.train.num_frames=400")  # 4 episodes of 100 frames
    launch.start(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run" / "train.jsonl")
    assert [r["episode"] for r in rows] == [1, 2]
    assert [r["frame"] for r in rows] == [200, 400]


def test_stop_at_return_marks_the_first_evaluation_that_reaches_it(tmp_path):
    cfg = OmegaConf.merge(CFG, {"stop_at_return": 3.0})
    context = RunContext(tmp_path, torch.device("cpu"), False, StopFlag(), {"wandb_id": "t"})
    counters = {"step": 0, "elapsed": 0.0}
    run = RunSession(cfg, context, _Agent(), counters, total_steps=10, frames_per_step=2, expect={}, rngs={})
    run.log_eval(1, {"frame": 2, "episode_return": 2.999})
    assert not run.reached
    run.log_eval(2, {"frame": 4, "episode_return": 3.0})  # at the target counts
    assert run.reached and counters["reached_return_at"] == 4  # frames, kept with the counters
    run.log_eval(3, {"frame": 6, "episode_return": 9.0})
    assert counters["reached_return_at"] == 4  # the first one
    run.close()
    for bad in ("x", True):
        with pytest.raises(ConfigError, match="stop_at_return"):
            RunSession(OmegaConf.merge(CFG, {"stop_at_return": bad}), context, _Agent(), {"step": 0},
                       total_steps=1, expect={}, rngs={})  # fmt: skip


@pytest.mark.parametrize("paper", ["ppo", "dqn"])
def test_an_online_run_stops_at_the_return_it_was_asked_for(cli, tmp_path, paper):
    """The replay and on-policy loops end a run, finished, at the first evaluation reaching stop_at_return
    (here the first one, at frame 0), and a resume of it trains no further."""
    run_dir = tmp_path / paper
    args = (f"paper={paper}", "env=cartpole", "debug=smoke", "stop_at_return=-1", "logger.progress=false")
    proc = cli(*args, f"hydra.run.dir={run_dir}", check=True)
    assert "reached stop_at_return=-1 at frame 0" in proc.stderr
    assert [r["frame"] for r in read_metrics(run_dir / "eval.jsonl")] == [0]
    assert not (run_dir / "train.jsonl").exists() or read_metrics(run_dir / "train.jsonl") == []
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    cli(f"resume={run_dir}", check=True)
    assert [r["frame"] for r in read_metrics(run_dir / "eval.jsonl")] == [0]


def test_a_stop_at_return_that_is_not_a_number_is_one_line(cli, tmp_path):
    proc = cli(
        "paper=ppo", "env=cartpole", "debug=smoke", "stop_at_return=soon", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert proc.returncode != 0 and "stop_at_return='soon' must be a number" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
