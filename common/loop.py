"""The online training loop shared by replay-based agents (DrQ-v2, DrM, SAC, ...).

Order per agent step, as facebookresearch/drqv2 `train.py`: (episode end → log, checkpoint, reset),
evaluate when due, act, update when due, step the env, store the transition. Frames = agent steps ×
action_repeat; budgets and intervals in the config count frames, schedules count agent steps.
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
from common.checkpoint import Checkpointer
from common.envs import Env, make_env
from common.errors import CheckpointError, ConfigError
from common.logger import Averager, RunLogger
from common.registry import import_entry
from common.runtime import RunContext


def validate_online(cfg: DictConfig) -> None:
    """Impossible sizes fail before anything is built or written."""
    p, t, b = cfg.paper, cfg.paper.train, cfg.paper.buffer
    checks = [
        (t.num_frames > 0, f"paper.train.num_frames={t.num_frames} must be positive"),
        (p.action_repeat >= 1, f"paper.action_repeat={p.action_repeat} must be at least 1"),
        (t.eval_every_frames > 0, f"paper.train.eval_every_frames={t.eval_every_frames} must be positive"),
        (t.eval_episodes >= 1, f"paper.train.eval_episodes={t.eval_episodes} must be at least 1"),
        (t.seed_frames >= 0, f"paper.train.seed_frames={t.seed_frames} must be >= 0"),
        (t.update_every_steps >= 1, f"paper.train.update_every_steps={t.update_every_steps} must be >= 1"),
        (b.batch_size >= 1, f"paper.buffer.batch_size={b.batch_size} must be positive"),
        (
            b.batch_size <= b.capacity,
            f"paper.buffer.batch_size={b.batch_size} exceeds paper.buffer.capacity={b.capacity}; "
            f"lower the batch or raise the capacity",
        ),
        (
            cfg.checkpoint.every_frames > 0,
            f"checkpoint.every_frames={cfg.checkpoint.every_frames} must be positive",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def build_env(cfg: DictConfig, seed: int) -> Env:
    p = cfg.paper
    return make_env(
        cfg.env,
        pixels=p.pixels,
        action_repeat=p.action_repeat,
        frame_stack=p.frame_stack,
        image_size=p.image_size,
        seed=seed,
    )


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


def train_online(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` online on `cfg.env`; returns the final evaluation return."""
    validate_online(cfg)
    env, eval_env = build_env(cfg, cfg.seed), build_env(cfg, cfg.seed)  # drqv2 seeds both alike
    try:
        return _train_online(cfg, ctx, env, eval_env)
    finally:
        env.close()
        eval_env.close()


def _train_online(cfg: DictConfig, ctx: RunContext, env: Env, eval_env: Env) -> float:
    p, t = cfg.paper, cfg.paper.train
    agent = import_entry(p.entry)(p.agent, env.spec, ctx.device, cfg.precision)
    replay = NStepReplay(env.spec, p.buffer.capacity, p.buffer.nstep, p.buffer.discount, seed=cfg.seed)
    checkpointer = Checkpointer(ctx.run_dir, cfg.checkpoint.keep)

    repeat = p.action_repeat
    total_steps = math.ceil(t.num_frames / repeat)
    seed_steps = t.seed_frames // repeat
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
        path = checkpointer.latest()
        if path is None:
            raise ConfigError(
                f"resume={ctx.run_dir}: no complete checkpoint in checkpoints/; start a new run"
            )
        state = checkpointer.load(
            path, {"paper": p.name, "env": cfg.env.name}, replay if cfg.checkpoint.replay else None
        )
        try:
            agent.load_state_dict(state["agent"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {path} does not fit this agent ({str(e).splitlines()[0][:120]})"
            ) from e
        c.update(state["counters"])
        torch.set_rng_state(state["torch_rng"])
        env.set_rng_state(state["env_rng"])
        eval_env.set_rng_state(state["eval_env_rng"])
        positions = state["logger"]
        if state["mid_episode"]:
            replay.end_episode()  # the interrupted episode ends here as a truncation

    logger = RunLogger(
        cfg,
        ctx.run_dir,
        ctx.info["wandb_id"],
        total_frames=total_steps * repeat,
        start_frame=c["step"] * repeat,
    )
    if positions is not None:
        logger.restore(positions)

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
        checkpointer.save(c["step"] * repeat, state, meta, replay if cfg.checkpoint.replay else None)

    clock = time.perf_counter()
    metrics, ts = Averager(), None
    episode_clock = clock
    while c["step"] < total_steps:
        step = c["step"]
        if ts is None or ts.done:
            if ts is not None:  # an episode just ended
                c["episode"] += 1
                elapsed = c["elapsed"] + time.perf_counter() - clock
                logger.log(
                    "train",
                    {
                        "frame": step * repeat,
                        "step": step,
                        "episode": c["episode"],
                        "episode_return": ts.episode_return,
                        "episode_length": ts.episode_length,
                        "buffer_size": len(replay),
                        "updates": c["updates"],
                        **metrics.pop(),
                        "time": elapsed,
                        "fps": ts.episode_length * repeat / max(1e-9, time.perf_counter() - episode_clock),
                    },
                )
                if step >= c["next_ckpt_step"]:
                    c["next_ckpt_step"] = (step // ckpt_every + 1) * ckpt_every
                    save_checkpoint(mid_episode=False)
            ts = env.reset()
            replay.add_first(ts.obs)
            episode_clock = time.perf_counter()

        due = step % eval_every == 0 and c["last_eval_step"] != step
        if due and not _eval(agent, eval_env, t.eval_episodes, step, repeat, c, logger, clock, ctx.stop):
            save_checkpoint(mid_episode=True)
            logger.close()
            return float(c["last_eval_return"])

        with torch.no_grad():
            action = agent.act(ts.obs, step, eval_mode=False)
        if step >= seed_steps and step % t.update_every_steps == 0 and replay.num_transitions() > 0:
            metrics.add(agent.update(replay.sample(p.buffer.batch_size), step))
            c["updates"] += 1
        ts = env.step(action)
        replay.add(action, ts.reward, ts.obs, ts.terminated, ts.truncated)
        c["step"] += 1
        logger.bar.update(repeat)

        if ctx.stop:
            save_checkpoint(mid_episode=not ts.done)
            logger.close()
            return float(c["last_eval_return"])

    if c["last_eval_step"] != c["step"]:
        _eval(agent, eval_env, t.eval_episodes, c["step"], repeat, c, logger, clock)
    save_checkpoint(mid_episode=False)
    score = float(c["last_eval_return"])
    logger.close({"final_eval_return": score})
    return score


def _eval(
    agent: Any,
    env: Env,
    episodes: int,
    step: int,
    repeat: int,
    c: dict,
    logger: RunLogger,
    clock: float,
    stop: Any = False,
) -> bool:
    """Evaluate and log a row; False (and the eval env's RNG rewound) when a stop signal cut it short."""
    rng = env.get_rng_state()
    logger.status(f"evaluating 0/{episodes}")
    result = evaluate(agent, env, episodes, step, stop, lambda i: logger.status(f"evaluating {i}/{episodes}"))
    logger.status(None)
    if result is None:
        env.set_rng_state(rng)  # so the checkpoint repeats this evaluation exactly on resume
        return False
    if hasattr(agent, "diagnostics"):  # optional agent state shown next to returns (e.g. dormant ratio)
        result.update(agent.diagnostics())
    c["last_eval_step"], c["last_eval_return"] = step, result["episode_return"]
    elapsed = c["elapsed"] + time.perf_counter() - clock
    logger.log(
        "eval", {"frame": step * repeat, "step": step, "episode": c["episode"], **result, "time": elapsed}
    )
    return True


train_online.validate = validate_online  # type: ignore[attr-defined]  # run before the run dir is written
