"""The skeleton every run loop shares (`common.loop`, `common.offline.loop`): resume from the latest
checkpoint, count and time the run, evaluate the policy and log the row, checkpoint, and stop on a signal.

A loop owns its counters (a dict of numbers with at least `step`, saved in every checkpoint) and decides
when to evaluate and to checkpoint; a `RunSession` does each of those the same way for every loop:

    run = RunSession(cfg, ctx, agent, counters, total_steps=..., rngs={"env_rng": env}, expect={...})
    while ...:                                   # the loop's own schedule
        result = run.evaluate(eval_env, step, episodes)   # None: a signal cut it; redone on resume
        run.log_eval(step, row)                  # eval.jsonl, W&B, `ctx.on_eval`
        run.save()                               # checkpoint: agent, counters, RNGs, logger positions
        run.advance()                            # one step done: counter and progress bar
        if run.stopped: ...                      # a stop signal arrived: checkpoint and return
    run.close(summary)

`stop_at_return` (top-level config) ends an online run at the first evaluation whose mean return reaches
it (`run.reached`, checked by the loop after each evaluation), as sample-complexity studies do.

Frames are `step * frames_per_step` (action repeat online, 1 offline): the checkpoint names, the `frame`
the caller logs and what `ctx.on_eval` receives.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from common.agent import Policy
from common.checkpoint import Checkpointer, SavesToDirectory, resume_agent
from common.divergence import DivergenceWatch, first_nonfinite, learning_rate_knobs
from common.envs import Env
from common.envs.base import EnvSpec
from common.errors import ConfigError, Diverged
from common.logger import RunLogger
from common.registry import import_entry
from common.runtime import RunContext, StopFlag


class HasRngState(Protocol):
    """An env or a sampler: whatever draws random numbers that a resume must continue."""

    def get_rng_state(self) -> dict[str, Any]: ...

    def set_rng_state(self, state: dict[str, Any]) -> None: ...


def stop_target(cfg: DictConfig) -> float | None:
    """The top-level `stop_at_return` as a float (None: train every frame); a one-line error otherwise."""
    target = cfg.get("stop_at_return")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        raise ConfigError(f"stop_at_return={target!r} must be a number (a mean evaluation return) or null")
    return None if target is None else float(target)


def make_agent(cfg: DictConfig, spec: EnvSpec, device: torch.device) -> Any:
    """`cfg.paper.entry` built as every loop builds it: ``Entry(cfg.paper.agent, spec, device, precision)``.

    Typed `Any`: the dotted path decides the class; each loop holds it as the protocol it drives (`Agent`,
    `StreamAgent`, `OfflineAgent`)."""
    return import_entry(cfg.paper.entry)(cfg.paper.agent, spec, device, cfg.precision)


def evaluate(
    agent: Policy,
    env: Env,
    episodes: int,
    step: int,
    stop: StopFlag | bool = False,
    on_episode: Callable[[int], None] | None = None,
) -> dict[str, float] | None:
    """Mean return and length of `episodes` deterministic episodes (the policy mean).

    Returns None when `stop` becomes true first (a signal arrived): the evaluation is then redone on resume.
    """
    returns, lengths = [], []
    for _ in range(episodes):
        ts = env.reset()
        while not ts.done:
            if stop:
                return None
            with torch.no_grad():
                action = agent.act(ts.obs, step, eval_mode=True)
            ts = env.step(action)
        returns.append(ts.episode_return)
        lengths.append(ts.episode_length)
        if on_episode is not None:
            on_episode(len(returns))
    return {"episode_return": float(np.mean(returns)), "episode_length": float(np.mean(lengths))}


class RunSession:
    """One run of a loop: its checkpoints, logger, counters and clock.

    Built after the agent (and anything `saved` or `rngs` name) and before the first step. When
    `ctx.resuming`, it loads the latest checkpoint first: checks it was written with `expect` (e.g. the
    paper and env), restores the agent, `saved`, the counters (updated in place), the torch RNG, each of
    `rngs` and the logger's files; `resumed` then holds the whole checkpoint state for the loop's own keys.
    `total_steps` sizes the progress bar, in `unit`s of `frames_per_step` per step.
    """

    def __init__(
        self,
        cfg: DictConfig,
        ctx: RunContext,
        agent: Policy,
        counters: dict[str, Any],
        *,
        total_steps: int,
        expect: Mapping[str, Any],
        rngs: Mapping[str, HasRngState],
        saved: SavesToDirectory | None = None,
        frames_per_step: int = 1,
        unit: str = "frame",
    ) -> None:
        self.ctx, self.agent, self.c = ctx, agent, counters
        self.frames_per_step = frames_per_step
        self.rngs = dict(rngs)
        self.saved = saved
        self.meta = {**expect, "config_hash": ctx.info.get("config_hash")}
        self.checkpointer = Checkpointer(ctx.run_dir, cfg.checkpoint.keep)
        self.resumed: dict[str, Any] | None = None
        if ctx.resuming:
            state = resume_agent(self.checkpointer, ctx.run_dir, expect, agent, saved)
            counters.update(state["counters"])
            torch.set_rng_state(state["torch_rng"])
            for key, holder in self.rngs.items():
                holder.set_rng_state(state[key])
            self.resumed = state
        self.logger = RunLogger(
            cfg,
            ctx.run_dir,
            ctx.info["wandb_id"],
            total_steps * frames_per_step,
            counters["step"] * frames_per_step,
            unit=unit,
        )
        if self.resumed is not None:
            self.logger.restore(self.resumed["logger"])
        self.clock = time.perf_counter()
        self.knobs = learning_rate_knobs(cfg)
        self.stop_at_return = stop_target(cfg)
        DivergenceWatch(agent, self.diverged)  # checks every update's metrics and every action

    @property
    def reached(self) -> bool:
        """An evaluation's mean return reached `stop_at_return`: the loop ends the run as finished."""
        return "reached_return_at" in self.c

    @property
    def stopped(self) -> bool:
        """A stop signal arrived (SIGTERM, SIGUSR2, Ctrl-C): checkpoint and return."""
        return bool(self.ctx.stop)

    def elapsed(self, now: float | None = None) -> float:
        """Seconds this run has trained, over all its resumptions."""
        return float(self.c["elapsed"]) + (time.perf_counter() if now is None else now) - self.clock

    def advance(self) -> None:
        """One agent step is done."""
        self.c["step"] += 1
        self.logger.bar.update(self.frames_per_step)

    def save(self, **extra: Any) -> Path:
        """Checkpoint the run at the current step; `extra` adds the loop's own keys (e.g. `mid_episode`)."""
        state = {
            "agent": self.agent.state_dict(),
            "counters": {**self.c, "elapsed": self.elapsed()},
            "torch_rng": torch.get_rng_state(),
            **{key: holder.get_rng_state() for key, holder in self.rngs.items()},
            "logger": self.logger.positions(),
            **extra,
        }
        bad = first_nonfinite(state["agent"])
        if bad is not None:  # never written: `latest` keeps naming the last finite checkpoint
            self.diverged(f"the agent's {bad} is not finite")
        return self.checkpointer.save(self.c["step"] * self.frames_per_step, state, self.meta, self.saved)

    def diverged(self, what: str) -> NoReturn:
        """Stop the run: `what` (a loss, an action, a weight) is not finite. Nothing more is written."""
        self.logger.close()
        step = int(self.c["step"])
        latest = self.checkpointer.latest()
        kept = f"checkpoints/latest stays {latest.name}" if latest else "no checkpoint was written"
        knobs = (
            f"the learning rate ({', '.join(self.knobs)})" if self.knobs else "the step sizes (paper.agent.*)"
        )
        at = f"step {step}" + (f" (frame {step * self.frames_per_step})" if self.frames_per_step > 1 else "")
        raise Diverged(f"training diverged at {at}: {what}; {kept}; lower {knobs} and start a new run")

    def evaluate(self, env: Env, step: int, episodes: int) -> dict[str, float] | None:
        """`episodes` deterministic episodes in `env`, shown on the progress bar; None if a signal cut them,
        with `env`'s RNG rewound so that the evaluation repeats exactly on resume."""
        rng = env.get_rng_state()
        self.logger.status(f"evaluating 0/{episodes}")
        result = evaluate(
            self.agent,
            env,
            episodes,
            step,
            self.ctx.stop,
            lambda i: self.logger.status(f"evaluating {i}/{episodes}"),
        )
        self.logger.status(None)
        if result is None:
            env.set_rng_state(rng)
        return result

    def log_eval(self, step: int, row: dict[str, Any]) -> None:
        """Log an evaluation row, then call `ctx.on_eval(frame, row, agent)` (HPO reports, snapshots)."""
        self.logger.log("eval", row)
        value = row.get("episode_return")
        target = self.stop_at_return
        if target is not None and not self.reached and value is not None and value >= target:
            frame = step * self.frames_per_step
            self.c["reached_return_at"] = frame  # a counter: saved with the checkpoint, so a resume knows
            self.logger.bar.write(
                f"evaluation return {value:.4g} reached stop_at_return={self.stop_at_return:g} at frame "
                f"{frame}: training stops here",
                file=sys.stderr,
            )
        if self.ctx.on_eval is not None:
            try:
                self.ctx.on_eval(step * self.frames_per_step, row, self.agent)
            except BaseException:  # e.g. an HPO trial pruned here: close the bar and the W&B run first
                self.logger.close()
                raise

    def log_train(self, row: dict[str, Any]) -> None:
        self.logger.log("train", row)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Close the progress bar and the W&B run (`summary`: final scalars for W&B)."""
        if self.reached and summary is not None:
            summary = {**summary, "reached_return_at": self.c["reached_return_at"]}
        self.logger.close(summary)
