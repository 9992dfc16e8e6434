"""The run loop every online agent shares, replay-based (DrQ-v2, DrM, SAC, ...) or streaming (stream-x).

Order per agent step, as facebookresearch/drqv2 `train.py`: (episode end → checkpoint, reset), evaluate when
due, act, [replay: update when due], step the env, [store the transition | stream: learn from it], and log
the episode's row when it ends. Frames = agent steps × action_repeat; budgets and intervals in the config
count frames, schedules count agent steps. How the agent learns is a small strategy class:
`ReplayUpdates` (`paper.loop: common.loop.train_online`) or `StreamUpdates` (`common.loop.train_stream`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.buffers import NStepReplay
from common.checkpoint import Checkpointer, resume_agent
from common.envs import Env, make_env
from common.envs.base import Step
from common.errors import ConfigError
from common.logger import Averager, RunLogger
from common.registry import import_entry
from common.runtime import RunContext


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def validate_run(cfg: DictConfig) -> None:
    """Checks every loop needs; impossible sizes fail before anything is built or written."""
    p, t = cfg.paper, cfg.paper.train
    _check(
        [
            (t.num_frames > 0, f"paper.train.num_frames={t.num_frames} must be positive"),
            (p.action_repeat >= 1, f"paper.action_repeat={p.action_repeat} must be at least 1"),
            (
                t.eval_every_frames > 0,
                f"paper.train.eval_every_frames={t.eval_every_frames} must be positive",
            ),
            (t.eval_episodes >= 1, f"paper.train.eval_episodes={t.eval_episodes} must be at least 1"),
            (
                cfg.checkpoint.every_frames > 0,
                f"checkpoint.every_frames={cfg.checkpoint.every_frames} must be positive",
            ),
        ]
    )


def build_env(cfg: DictConfig, seed: int) -> Env:
    """The env of `cfg.env` as the paper sees it (pixels or states, repeat, frame stack, time feature)."""
    p = cfg.paper
    env = make_env(
        cfg.env,
        pixels=p.pixels,
        action_repeat=p.action_repeat,
        frame_stack=p.frame_stack,
        image_size=p.image_size,
        seed=seed,
    )
    if p.get("time_feature", False):
        if p.pixels:
            raise ConfigError("paper.time_feature appends to state observations: it needs pixels=false")
        from common.envs.time_feature import TimeFeature

        env = TimeFeature(env)
    return env


# ------------------------------------------------------------------------------------- how agents learn


class ReplayUpdates:
    """Store every transition in an n-step replay; `paper.train.updates_per_step` calls of
    `agent.update(batch, step)` (each on a fresh batch) every `paper.train.update_every_steps` agent steps
    once `paper.train.seed_frames` have passed, before the env step (drqv2 `train.py` order). The
    update-to-data ratio is updates_per_step / update_every_steps."""

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        t, b = cfg.paper.train, cfg.paper.buffer
        _check(
            [
                (t.seed_frames >= 0, f"paper.train.seed_frames={t.seed_frames} must be >= 0"),
                (
                    t.update_every_steps >= 1,
                    f"paper.train.update_every_steps={t.update_every_steps} must be >= 1",
                ),
                (t.updates_per_step >= 1, f"paper.train.updates_per_step={t.updates_per_step} must be >= 1"),
                (b.batch_size >= 1, f"paper.buffer.batch_size={b.batch_size} must be positive"),
                (
                    b.batch_size <= b.capacity,
                    f"paper.buffer.batch_size={b.batch_size} exceeds paper.buffer.capacity="
                    f"{b.capacity}; lower the batch or raise the capacity",
                ),
            ]
        )

    def __init__(self, cfg: DictConfig, agent: Any, env: Env) -> None:
        p = cfg.paper
        self.agent = agent
        self.replay = NStepReplay(
            env.spec, p.buffer.capacity, p.buffer.nstep, p.buffer.discount, seed=cfg.seed
        )
        self.batch_size = p.buffer.batch_size
        self.seed_steps = p.train.seed_frames // p.action_repeat
        self.every = p.train.update_every_steps
        self.repeats = p.train.updates_per_step
        self.saved = self.replay if cfg.checkpoint.replay else None  # what checkpoints hold besides `state`

    def begin_episode(self, first: Step) -> None:
        self.replay.add_first(first.obs)

    def before_env_step(self, step: int) -> list[dict[str, float]]:
        if step >= self.seed_steps and step % self.every == 0 and self.replay.num_transitions() > 0:
            return [self.agent.update(self.replay.sample(self.batch_size), step) for _ in range(self.repeats)]
        return []

    def after_env_step(
        self, step: int, obs: np.ndarray, action: np.ndarray, ts: Step
    ) -> list[dict[str, float]]:
        self.replay.add(action, ts.reward, ts.obs, ts.terminated, ts.truncated)
        return []

    def interrupt_episode(self) -> None:
        self.replay.end_episode()  # the interrupted episode ends here as a truncation

    def stored(self) -> int:
        return len(self.replay)


class StreamUpdates:
    """No replay: one `agent.learn(transition)` per env step, from that step's transition only."""

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        pass

    def __init__(self, cfg: DictConfig, agent: Any, env: Env) -> None:
        self.agent = agent
        self.saved = None

    def begin_episode(self, first: Step) -> None:
        pass

    def before_env_step(self, step: int) -> list[dict[str, float]]:
        return []

    def after_env_step(
        self, step: int, obs: np.ndarray, action: np.ndarray, ts: Step
    ) -> list[dict[str, float]]:
        return [self.agent.learn(obs, action, ts.reward, ts.obs, ts.terminated, ts.truncated)]

    def interrupt_episode(self) -> None:
        self.agent.end_episode()  # forget traces: the interrupted episode ends without a last update

    def stored(self) -> int:
        return 0


# ------------------------------------------------------------------------------------------ evaluation


def evaluate(
    agent: Any,
    env: Env,
    episodes: int,
    step: int,
    stop: Any = False,
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


def mean_return(env: Env, policy: Callable[[np.ndarray], np.ndarray], episodes: int) -> float:
    """Average undiscounted return of `episodes` full episodes of `policy` (observation -> action)."""
    returns = []
    for _ in range(episodes):
        ts = env.reset()
        while not ts.done:
            ts = env.step(policy(ts.obs))
        returns.append(ts.episode_return)
    return float(np.mean(returns))


# ------------------------------------------------------------------------------------------- the loop


def train_online(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (an `Agent`) with a replay; returns the final evaluation return."""
    return run_loop(cfg, ctx, ReplayUpdates)


def train_stream(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (a `StreamAgent`) from each transition once; returns the final eval return."""
    return run_loop(cfg, ctx, StreamUpdates)


def _validator(learning: type[ReplayUpdates] | type[StreamUpdates]) -> Callable[[DictConfig], None]:
    def validate(cfg: DictConfig) -> None:
        validate_run(cfg)
        learning.validate(cfg)

    return validate


# `common.launch` calls `<loop>.validate(cfg)` before it writes the run directory.
train_online.validate = _validator(ReplayUpdates)  # type: ignore[attr-defined]
train_stream.validate = _validator(StreamUpdates)  # type: ignore[attr-defined]


def run_loop(cfg: DictConfig, ctx: RunContext, learning: type[ReplayUpdates] | type[StreamUpdates]) -> float:
    _validator(learning)(cfg)
    env, eval_env = build_env(cfg, cfg.seed), build_env(cfg, cfg.seed)  # drqv2 seeds both alike
    try:
        return _run(cfg, ctx, env, eval_env, learning)
    finally:
        env.close()
        eval_env.close()


def _run(cfg: DictConfig, ctx: RunContext, env: Env, eval_env: Env, learning: Any) -> float:
    p, t = cfg.paper, cfg.paper.train
    agent = import_entry(p.entry)(p.agent, env.spec, ctx.device, cfg.precision)
    learner = learning(cfg, agent, env)
    checkpointer = Checkpointer(ctx.run_dir, cfg.checkpoint.keep)

    repeat = p.action_repeat
    total_steps = math.ceil(t.num_frames / repeat)
    eval_every = max(1, t.eval_every_frames // repeat)
    ckpt_every = max(1, cfg.checkpoint.every_frames // repeat)

    c: dict[str, Any] = {
        "step": 0,
        "episode": 0,
        "updates": 0,
        "last_eval_step": -1,
        "next_ckpt_step": ckpt_every,
        "elapsed": 0.0,
        "last_eval_return": float("nan"),
    }
    positions = None
    if ctx.resuming:
        expect = {"paper": p.name, "env": cfg.env.name}
        state = resume_agent(checkpointer, ctx.run_dir, expect, agent, learner.saved)
        c.update(state["counters"])
        torch.set_rng_state(state["torch_rng"])
        env.set_rng_state(state["env_rng"])
        eval_env.set_rng_state(state["eval_env_rng"])
        positions = state["logger"]
        if state["mid_episode"]:
            learner.interrupt_episode()

    logger = RunLogger(cfg, ctx.run_dir, ctx.info["wandb_id"], total_steps * repeat, c["step"] * repeat)
    if positions is not None:
        logger.restore(positions)
    clock = time.perf_counter()

    def save_checkpoint(mid_episode: bool) -> None:
        state = {
            "agent": agent.state_dict(),
            "counters": {**c, "elapsed": c["elapsed"] + time.perf_counter() - clock},
            "torch_rng": torch.get_rng_state(),
            "env_rng": env.get_rng_state(),
            "eval_env_rng": eval_env.get_rng_state(),
            "logger": logger.positions(),
            "mid_episode": mid_episode,
        }
        meta = {"paper": p.name, "env": cfg.env.name, "config_hash": ctx.info.get("config_hash")}
        checkpointer.save(c["step"] * repeat, state, meta, learner.saved)

    def evaluate_and_log(step: int) -> bool:
        """Evaluate and log a row; False if a signal cut it (eval env RNG rewound: it repeats on resume)."""
        rng = eval_env.get_rng_state()
        episodes = t.eval_episodes
        logger.status(f"evaluating 0/{episodes}")
        result = evaluate(
            agent, eval_env, episodes, step, ctx.stop, lambda i: logger.status(f"evaluating {i}/{episodes}")
        )
        logger.status(None)
        if result is None:
            eval_env.set_rng_state(rng)
            return False
        if hasattr(agent, "diagnostics"):  # optional agent state shown next to returns (e.g. dormant ratio)
            result.update(agent.diagnostics())
        c["last_eval_step"], c["last_eval_return"] = step, result["episode_return"]
        elapsed = c["elapsed"] + time.perf_counter() - clock
        row = {"frame": step * repeat, "step": step, "episode": c["episode"], **result, "time": elapsed}
        logger.log("eval", row)
        if ctx.on_eval is not None:
            try:
                ctx.on_eval(step * repeat, row, agent)
            except BaseException:  # e.g. an HPO trial pruned here: close the bar and the W&B run first
                logger.close()
                raise
        return True

    def stop_here(mid_episode: bool) -> float:
        save_checkpoint(mid_episode)
        logger.close()
        return float(c["last_eval_return"])

    metrics, ts = Averager(), None
    episode_clock = clock
    while c["step"] < total_steps:
        step = c["step"]
        if ts is None or ts.done:
            if ts is not None and step >= c["next_ckpt_step"]:  # an episode just ended
                c["next_ckpt_step"] = (step // ckpt_every + 1) * ckpt_every
                save_checkpoint(mid_episode=False)
            ts = env.reset()
            learner.begin_episode(ts)
            episode_clock = time.perf_counter()

        if step % eval_every == 0 and c["last_eval_step"] != step and not evaluate_and_log(step):
            return stop_here(mid_episode=True)

        obs = ts.obs
        with torch.no_grad():
            action = agent.act(obs, step, eval_mode=False)
        updates = learner.before_env_step(step)  # metrics of each update, or []
        ts = env.step(action)
        updates += learner.after_env_step(step, obs, action, ts)
        for m in updates:
            metrics.add(m)
        c["updates"] += len(updates)
        c["step"] += 1
        logger.bar.update(repeat)

        if ts.done:
            c["episode"] += 1
            now = time.perf_counter()
            logger.log(
                "train",
                {
                    "frame": c["step"] * repeat,
                    "step": c["step"],
                    "episode": c["episode"],
                    "episode_return": ts.episode_return,
                    "episode_length": ts.episode_length,
                    "buffer_size": learner.stored(),
                    "updates": c["updates"],
                    **metrics.pop(),
                    "time": c["elapsed"] + now - clock,
                    "fps": ts.episode_length * repeat / max(1e-9, now - episode_clock),
                },
            )
        if ctx.stop:
            return stop_here(mid_episode=not ts.done)

    if c["last_eval_step"] != c["step"]:
        evaluate_and_log(c["step"])
    save_checkpoint(mid_episode=False)
    score = float(c["last_eval_return"])
    logger.close({"final_eval_return": score})
    return score
