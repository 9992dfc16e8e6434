"""The offline run loop: learn from a fixed dataset, evaluate in the live environment.

`paper.loop: common.offline.loop.train_offline`. The dataset is ``rlrepro/<env>/<dataset>-v0`` (top-level
`dataset=` key; written by `papers/d4rl`). Per gradient step: sample a uniform batch, `agent.update`. Every
`paper.train.eval_every_steps` steps (and at step 0 and the end): `eval_episodes` deterministic episodes in
the env, logged with the D4RL normalised score from the dataset's reference returns. The agent's
`prepare(data)` sees the whole dataset once first (state/reward statistics). A checkpoint follows every
evaluation. Rows carry `frame` = gradient steps too (no env frames are consumed), so reports and W&B plot
offline runs on the same axis key as online ones.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig

from common.checkpoint import Checkpointer, resume_agent
from common.errors import ConfigError, DatasetError
from common.evaluation.normalization import normalized_score
from common.logger import Averager, RunLogger
from common.loop import build_env, evaluate
from common.offline.data import OfflineData, OfflineSampler
from common.offline.minari_io import check_split, dataset_id, datasets_root, load_dataset, read_info
from common.registry import import_entry
from common.runtime import RunContext, write_json


def validate(cfg: DictConfig) -> None:
    """Impossible settings fail before the run directory is written."""
    t, b = cfg.paper.train, cfg.paper.buffer
    if cfg.get("dataset") is None:
        raise ConfigError(
            f"paper={cfg.paper.name} learns offline: choose a dataset, e.g. dataset=medium "
            f"(random, medium, medium-replay, expert, medium-expert)"
        )
    check_split(cfg.dataset)
    checks = [
        (t.num_steps > 0, f"paper.train.num_steps={t.num_steps} must be positive"),
        (t.eval_every_steps > 0, f"paper.train.eval_every_steps={t.eval_every_steps} must be positive"),
        (t.eval_episodes >= 1, f"paper.train.eval_episodes={t.eval_episodes} must be at least 1"),
        (t.log_every_steps > 0, f"paper.train.log_every_steps={t.log_every_steps} must be positive"),
        (b.batch_size >= 1, f"paper.buffer.batch_size={b.batch_size} must be positive"),
        (0.0 < b.discount <= 1.0, f"paper.buffer.discount={b.discount} must be in (0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if cfg.paper.pixels:
        raise ConfigError("the offline loop reads state datasets: set paper.pixels=false")
    if read_info(cfg.env.name, cfg.dataset) is None:  # before the run directory is written
        raise DatasetError(
            f"dataset {dataset_id(cfg.env.name, cfg.dataset)} not found under {datasets_root()} "
            f"(MINARI_DATASETS_PATH); generate it with: python run.py paper=d4rl env={cfg.env.name}"
        )


def train_offline(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (an `OfflineAgent`) on the dataset; returns the final evaluation return."""
    validate(cfg)
    env = build_env(cfg, cfg.seed)
    try:
        data = load_dataset(cfg.env.name, cfg.dataset, env.spec)
        return run_learner(cfg, ctx, env, data)
    finally:
        env.close()


train_offline.validate = validate  # type: ignore[attr-defined]


def record_dataset(ctx: RunContext, cfg: DictConfig, data: OfflineData) -> None:
    """Provenance for reports in run.json: which dataset, and the reference returns that normalise it."""
    ctx.info["dataset"] = {
        "id": dataset_id(cfg.env.name, cfg.dataset),
        "split": cfg.dataset,
        "transitions": len(data),
        "ref_min_score": float(data.metadata["ref_min_score"]),
        "ref_max_score": float(data.metadata["ref_max_score"]),
        "made_by": data.metadata.get("run_dir"),
    }
    write_json(ctx.run_dir / "run.json", ctx.info)


def run_learner(
    cfg: DictConfig, ctx: RunContext, env: Any, data: OfflineData, prepare_on: OfflineData | None = None
) -> float:
    """Train `cfg.paper.entry` on batches from `data`, evaluating in `env`; returns the last evaluation return
    (raw, like every run's score; its D4RL normalised score is in the eval row and the W&B summary).

    `prepare_on` (default `data`) is what `agent.prepare` sees: e.g. SynthER trains on synthetic transitions
    but takes its state and reward normalisers from the real dataset. Reference scores come from `data`.
    """
    p, t = cfg.paper, cfg.paper.train
    ref_min, ref_max = float(data.metadata["ref_min_score"]), float(data.metadata["ref_max_score"])
    record_dataset(ctx, cfg, data)
    agent = import_entry(p.entry)(p.agent, env.spec, ctx.device, cfg.precision)
    agent.prepare(data if prepare_on is None else prepare_on)
    sampler = OfflineSampler(data, p.buffer.discount, seed=cfg.seed)
    checkpointer = Checkpointer(ctx.run_dir, cfg.checkpoint.keep)
    c: dict[str, Any] = {
        "step": 0,
        "last_eval_step": -1,
        "last_return": float("nan"),
        "last_score": float("nan"),
        "elapsed": 0.0,
    }
    positions = None
    if ctx.resuming:
        expect = {"paper": p.name, "env": cfg.env.name, "dataset": cfg.dataset}
        state = resume_agent(checkpointer, ctx.run_dir, expect, agent)
        c.update(state["counters"])
        torch.set_rng_state(state["torch_rng"])
        sampler.set_rng_state(state["sampler_rng"])
        env.set_rng_state(state["env_rng"])
        positions = state["logger"]

    logger = RunLogger(cfg, ctx.run_dir, ctx.info["wandb_id"], t.num_steps, c["step"], unit="step")
    if positions is not None:
        logger.restore(positions)
    clock = time.perf_counter()

    def elapsed() -> float:
        return c["elapsed"] + time.perf_counter() - clock

    def save_checkpoint() -> None:
        state = {
            "agent": agent.state_dict(),
            "counters": {**c, "elapsed": elapsed()},
            "torch_rng": torch.get_rng_state(),
            "sampler_rng": sampler.get_rng_state(),
            "env_rng": env.get_rng_state(),
            "logger": logger.positions(),
        }
        meta = {
            "paper": p.name,
            "env": cfg.env.name,
            "dataset": cfg.dataset,
            "config_hash": ctx.info.get("config_hash"),
        }
        checkpointer.save(c["step"], state, meta, None)

    def evaluate_and_log(step: int) -> bool:
        rng = env.get_rng_state()
        episodes = t.eval_episodes
        logger.status(f"evaluating 0/{episodes}")
        result = evaluate(
            agent, env, episodes, step, ctx.stop, lambda i: logger.status(f"evaluating {i}/{episodes}")
        )
        logger.status(None)
        if result is None:  # a signal cut the evaluation: it is redone on resume
            env.set_rng_state(rng)
            return False
        score = float(normalized_score(result["episode_return"], ref_min, ref_max))
        row = {"frame": step, "step": step, **result, "normalized_score": score, "time": elapsed()}
        logger.log("eval", row)
        c["last_eval_step"], c["last_return"], c["last_score"] = step, result["episode_return"], score
        if ctx.on_eval is not None:
            try:
                ctx.on_eval(step, row, agent)
            except BaseException:  # e.g. an HPO trial pruned here: close the bar and the W&B run first
                logger.close()
                raise
        return True

    metrics = Averager()
    log_clock, log_step = time.perf_counter(), c["step"]
    while True:
        step = c["step"]
        if (step % t.eval_every_steps == 0 or step == t.num_steps) and c["last_eval_step"] != step:
            if not evaluate_and_log(step):
                break
            save_checkpoint()
        if step >= t.num_steps or ctx.stop:
            break
        metrics.add(agent.update(sampler.sample(p.buffer.batch_size), step))
        c["step"] += 1
        logger.bar.update(1)
        if c["step"] % t.log_every_steps == 0:
            now = time.perf_counter()
            rate = (c["step"] - log_step) / max(1e-9, now - log_clock)
            logger.log(
                "train",
                {
                    "frame": c["step"],
                    "step": c["step"],
                    **metrics.pop(),
                    "time": elapsed(),
                    "updates_per_s": rate,
                },
            )
            log_clock, log_step = now, c["step"]
    if ctx.stop and c["last_eval_step"] != c["step"]:
        save_checkpoint()  # stopped between evaluations: keep the updates made since the last one
    done = c["step"] >= t.num_steps
    logger.close(
        {"final_return": c["last_return"], "final_normalized_score": c["last_score"]} if done else None
    )
    return float(c["last_return"])
