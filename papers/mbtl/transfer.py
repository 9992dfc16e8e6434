"""The transfer matrix: train a policy on each source context (sub-runs of this repository's `paper=ppo` or
`paper=dqn`, launched as one Hydra multirun so `paper.launcher=slurm` spreads them over a cluster), then
run each one zero-shot on every target context (MBTL @671f0e0 control-tasks/transfer.py: the source model
loaded, `model.predict(obs, deterministic=True)`, `--test_eps` episodes on the target).

Sub-runs live in the MBTL run directory: `sources/<value>/` (one per context value), `multitask/run/`.
A launch skips values whose run already finished, so starting the MBTL run again in place continues it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from common.errors import CheckpointError, ConfigError
from common.registry import ROOT

SOURCES, MULTITASK = "sources", "multitask"


def value_text(value: float) -> str:
    """A context value as the sub-run's directory name and command-line value (shortest round-trip)."""
    return repr(float(value))


def finished(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("state") == "finished"
    except (OSError, ValueError):
        return False


def _fmt(v: Any) -> str:
    return "null" if v is None else str(v)


def base_overrides(cfg: DictConfig) -> list[str]:
    """What every sub-run shares: the learner, the env and its other context values, the budget, the seed."""
    p, src = cfg.paper, cfg.paper.source
    out = [
        f"paper={src.paper}",
        f"env={cfg.env.name}",
        f"seed={cfg.seed}",
        f"device={cfg.device}",
        f"env.max_episode_frames={_fmt(cfg.env.max_episode_frames)}",
        f"paper.train.num_frames={p.train.num_frames}",
        f"paper.train.eval_every_frames={p.train.eval_every_frames}",
        f"paper.train.eval_episodes={p.train.eval_episodes}",
        f"hydra/launcher={p.launcher}",
        "logger.progress=false",
    ]
    if cfg.get("tag"):
        out.append(f"tag={cfg.tag}")
    for name, value in cfg.env.context.items():
        if name != p.context.name:
            out.append(f"env.context.{name}={value_text(value)}")
    if src.paper_env:
        out.append(f"paper_env={src.paper_env}")
    if cfg.get("debug_preset") == "smoke":
        out.append("debug=smoke")
    return [*out, *[str(o) for o in src.overrides]]


def launch(args: Sequence[str], log: Path, watch: Callable[[], None]) -> None:
    """`python run.py -m ARGS`, its output to `log`; `watch()` every second while it runs (progress)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "-m", *args], cwd=ROOT, stdout=out, stderr=out, env=env
        )
        try:
            while proc.poll() is None:
                watch()
                time.sleep(1.0)
        except BaseException:
            proc.terminate()  # a stop signal: the sub-runs checkpoint and stop; a restart continues them
            proc.wait()
            raise
    watch()
    if proc.returncode != 0:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["(no output)"]
        raise ConfigError(f"source training failed (exit {proc.returncode}; see {log}): {tail[0]}")


def train_sources(cfg: DictConfig, run_dir: Path, values: list[float], watch: Callable[[], None]) -> Path:
    """One sub-run per context value (those not finished yet), as one multirun; their directory."""
    sweep = run_dir / SOURCES
    todo = [v for v in values if not finished(sweep / value_text(v))]
    if todo:
        name = cfg.paper.context.name
        launch(
            [
                *base_overrides(cfg),
                f"env.context.{name}={','.join(value_text(v) for v in todo)}",
                f"hydra.sweep.dir={sweep}",
                f"hydra.sweep.subdir=${{env.context.{name}}}",
            ],
            run_dir / "sources.log",
            watch,
        )
    return sweep


def train_multitask(cfg: DictConfig, run_dir: Path, values: list[float], watch: Callable[[], None]) -> Path:
    """One sub-run whose env draws a context of the grid at every episode (`env.multi_context`)."""
    out = run_dir / MULTITASK / "run"
    if not finished(out):
        grid = ",".join(value_text(v) for v in values)
        launch(
            [
                *base_overrides(cfg),
                f"env.multi_context={{{cfg.paper.context.name}:[{grid}]}}",
                f"hydra.sweep.dir={run_dir / MULTITASK}",
                "hydra.sweep.subdir=run",
            ],
            run_dir / "multitask.log",
            watch,
        )
    return out


def find_sources(directory: Path, name: str, values: list[float]) -> dict[float, Path]:
    """The finished single-context runs below `directory` (any depth, e.g. a sweep's multirun) for each of
    `values`; a one-line ConfigError naming the values without one."""
    from common.launch import load_run_config

    found: dict[float, Path] = {}
    for config in sorted(directory.rglob("config.yaml")):
        run = config.parent
        if run.name == ".hydra" or not finished(run):
            continue
        rc = load_run_config(run)
        context = rc.env.get("context") or {}
        if rc.env.get("multi_context") is None and name in context:
            found.setdefault(float(context[name]), run)
    runs = {}
    for v in values:
        match = next((r for c, r in found.items() if math.isclose(c, v, rel_tol=1e-9)), None)
        if match is None:
            raise ConfigError(
                f"paper.sources={directory} has no finished run with env.context.{name}={v}; train it, or "
                f"choose paper.context.factors that the runs cover"
            )
        runs[v] = match
    return runs


def load_policy(run_dir: Path, device: torch.device) -> tuple[Any, DictConfig]:
    """The agent of a finished run from its latest checkpoint, and the run's config."""
    from common.checkpoint import Checkpointer
    from common.launch import load_run_config
    from common.loop import build_env
    from common.session import make_agent

    cfg = load_run_config(run_dir)
    path = Checkpointer(run_dir, 1).latest()
    if path is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to evaluate; finish the run first")
    state = Checkpointer(run_dir, 1).load(path, {"paper": cfg.paper.name}, None)
    env = build_env(cfg, int(cfg.seed), evaluation=True)
    try:
        agent = make_agent(cfg, env.spec, device)
    finally:
        env.close()
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit its agent ({str(e).splitlines()[0]})") from e
    return agent, cfg


def target_config(run_cfg: DictConfig, name: str, value: float) -> DictConfig:
    """The run's config with its env set to the single context `name=value` (a copy: the run's stays)."""
    cfg = OmegaConf.create(OmegaConf.to_container(run_cfg, resolve=True))
    assert isinstance(cfg, DictConfig)
    cfg.env.context[name] = float(value)
    cfg.env.multi_context = None
    return cfg


def zero_shot(agent: Any, run_cfg: DictConfig, name: str, value: float, episodes: int, seed: int) -> float:
    """Mean return of `agent`'s deterministic policy over `episodes` episodes of the target context."""
    from common.loop import build_env
    from common.session import evaluate

    env = build_env(target_config(run_cfg, name, value), seed, evaluation=True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            result = evaluate(agent, env, episodes, step=2**62)  # past any exploration schedule
    finally:
        env.close()
    assert result is not None
    return float(result["episode_return"])
