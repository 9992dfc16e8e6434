"""The offline run loop: learn from a fixed dataset, evaluate in the live environment.

`paper.loop: common.offline.loop.train_offline`. The dataset is ``rlrepro/<env>/<dataset>-v0`` (top-level
`dataset=` key; written by `papers/d4rl`). Per gradient step: sample a uniform batch, `agent.update`. Every
`paper.train.eval_every_steps` steps (and at step 0 and the end): `eval_episodes` deterministic episodes in
the env, logged with the D4RL normalised score from the dataset's reference returns. The agent's
`prepare(data)` sees the whole dataset once first (state/reward statistics). A checkpoint follows every
evaluation. Rows carry `frame` = gradient steps too (no env frames are consumed), so reports and W&B plot
offline runs on the same axis key as online ones. Resuming, evaluating, logging, checkpointing and stopping on
a signal are `common.session.RunSession`'s, shared with the online loop.
"""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig

from common.agent import OfflineAgent
from common.envs import Env
from common.errors import ConfigError, DatasetError
from common.evaluation.normalization import normalized_score
from common.logger import Averager
from common.loop import build_env
from common.offline.data import OfflineData, OfflineSampler
from common.offline.minari_io import check_split, dataset_id, datasets_root, load_dataset, read_info
from common.registry import loop
from common.runtime import RunContext, write_json
from common.session import RunSession, make_agent


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


@loop(validate=validate)
def train_offline(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (an `OfflineAgent`) on the dataset; returns the final evaluation return."""
    env = build_env(cfg, cfg.seed)
    try:
        data = load_dataset(cfg.env.name, cfg.dataset, env.spec)
        return run_learner(cfg, ctx, env, data)
    finally:
        env.close()


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
    cfg: DictConfig, ctx: RunContext, env: Env, data: OfflineData, prepare_on: OfflineData | None = None
) -> float:
    """Train `cfg.paper.entry` on batches from `data`, evaluating in `env`; returns the last evaluation return
    (raw, like every run's score; its D4RL normalised score is in the eval row and the W&B summary).

    `prepare_on` (default `data`) is what `agent.prepare` sees: e.g. SynthER trains on synthetic transitions
    but takes its state and reward normalisers from the real dataset. Reference scores come from `data`.
    `cfg` is not validated here: its `Loop` validates it once, before the run directory is written.
    """
    p, t = cfg.paper, cfg.paper.train
    ref_min, ref_max = float(data.metadata["ref_min_score"]), float(data.metadata["ref_max_score"])
    record_dataset(ctx, cfg, data)
    agent: OfflineAgent = make_agent(cfg, env.spec, ctx.device)
    agent.prepare(data if prepare_on is None else prepare_on)
    sampler = OfflineSampler(data, p.buffer.discount, seed=cfg.seed)
    c: dict[str, Any] = {
        "step": 0,
        "last_eval_step": -1,
        "last_return": float("nan"),
        "last_score": float("nan"),
        "elapsed": 0.0,
    }
    run = RunSession(
        cfg,
        ctx,
        agent,
        c,
        total_steps=t.num_steps,
        unit="step",
        expect={"paper": p.name, "env": cfg.env.name, "dataset": cfg.dataset},
        rngs={"sampler_rng": sampler, "env_rng": env},
    )

    def evaluate_and_log(step: int) -> bool:
        result = run.evaluate(env, step, t.eval_episodes)
        if result is None:  # a signal cut the evaluation: it is redone on resume
            return False
        score = float(normalized_score(result["episode_return"], ref_min, ref_max))
        c["last_eval_step"], c["last_return"], c["last_score"] = step, result["episode_return"], score
        row = {"frame": step, "step": step, **result, "normalized_score": score, "time": run.elapsed()}
        run.log_eval(step, row)
        return True

    metrics = Averager()  # its sums are checkpointed: a resumed run logs the same averages
    if run.resumed is not None and "metrics" in run.resumed:  # absent in checkpoints of earlier versions
        metrics.load_state_dict(run.resumed["metrics"])
    log_clock, log_step = run.clock, c["step"]
    while True:
        step = c["step"]
        if (step % t.eval_every_steps == 0 or step == t.num_steps) and c["last_eval_step"] != step:
            if not evaluate_and_log(step):
                break
            run.save(metrics=metrics.state_dict())
        if step >= t.num_steps or run.stopped:
            break
        metrics.add(agent.update(sampler.sample(p.buffer.batch_size), step))
        run.advance()
        if c["step"] % t.log_every_steps == 0:
            now = time.perf_counter()
            rate = (c["step"] - log_step) / max(1e-9, now - log_clock)
            row = {"frame": c["step"], "step": c["step"], **metrics.pop(), "time": run.elapsed(now)}
            run.log_train({**row, "updates_per_s": rate})
            log_clock, log_step = now, c["step"]
    if run.stopped and c["last_eval_step"] != c["step"]:
        run.save(metrics=metrics.state_dict())  # stopped between evaluations: keep the updates since
    done = c["step"] >= t.num_steps
    run.close({"final_return": c["last_return"], "final_normalized_score": c["last_score"]} if done else None)
    return float(c["last_return"])
