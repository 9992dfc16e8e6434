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

import sys
import time
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig

from common.agent import OfflineAgent
from common.envs import Env
from common.envs.base import SavesState, Step, env_state
from common.errors import ConfigError, DatasetError
from common.evaluation.normalization import normalized_score
from common.logger import Averager
from common.loop import build_env
from common.offline import switch
from common.offline.data import OfflineData, OfflineSampler
from common.offline.minari_io import check_split, dataset_id, datasets_root, load_dataset, read_info
from common.registry import loop
from common.runtime import RunContext, write_json
from common.session import RunSession, make_agent

SIMULATED = ("gym", "dmc")  # suites with a simulator to fine-tune in


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
    n_online = online_steps(cfg)
    if n_online < 0:
        raise ConfigError(f"paper.train.online_steps={n_online} must be >= 0 (0: offline only)")
    if n_online > 0:
        if cfg.env.suite not in SIMULATED:
            raise ConfigError(
                f"paper.train.online_steps={n_online} fine-tunes in a simulator, but env={cfg.env.name} "
                f"(suite {cfg.env.suite}) has none here; set paper.train.online_steps=0"
            )
        for key in ("online_eval_every", "switch_eval_every"):
            if int(t.get(key) or 0) < 1:
                raise ConfigError(f"paper.train.{key} must be a positive number of env steps")
        if int(t.get("switch_window") or 0) < 0:
            raise ConfigError(f"paper.train.switch_window={t.switch_window} must be >= 0")
        if cfg.paper.get("agent", {}).get("actor_lr_schedule") == "cosine":
            print(
                "warning: paper.agent.actor_lr_schedule=cosine reaches 0 at the last offline update, so the "
                "actor stops learning online; fine-tuning runs use paper.agent.actor_lr_schedule=constant",
                file=sys.stderr,
            )
    if read_info(cfg.env.name, cfg.dataset) is None:  # before the run directory is written
        raise DatasetError(
            f"dataset {dataset_id(cfg.env.name, cfg.dataset)} not found under {datasets_root()} "
            f"(MINARI_DATASETS_PATH); generate it with: python run.py paper=d4rl env={cfg.env.name}"
        )


@loop(validate=validate)
def train_offline(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (an `OfflineAgent`) on the dataset; returns the final evaluation return."""
    env = build_env(cfg, cfg.seed)
    train_env = build_env(cfg, cfg.seed + 1) if online_steps(cfg) > 0 else None
    try:
        data = load_dataset(cfg.env.name, cfg.dataset, env.spec)
        return run_learner(cfg, ctx, env, data, train_env=train_env)
    finally:
        for e in (env, train_env):
            if e is not None:
                e.close()


def online_steps(cfg: DictConfig) -> int:
    """Env steps of online fine-tuning after the offline updates (`paper.train.online_steps`, 0 if absent)."""
    return int(cfg.paper.train.get("online_steps") or 0)


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
    cfg: DictConfig,
    ctx: RunContext,
    env: Env,
    data: OfflineData,
    prepare_on: OfflineData | None = None,
    train_env: Env | None = None,
) -> float:
    """Train `cfg.paper.entry` on batches from `data`, evaluating in `env`; returns the last evaluation return
    (raw, like every run's score; its D4RL normalised score is in the eval row and the W&B summary).

    `prepare_on` (default `data`) is what `agent.prepare` sees: e.g. SynthER trains on synthetic transitions
    but takes its state and reward normalisers from the real dataset. Reference scores come from `data`.
    `cfg` is not validated here: its `Loop` validates it once, before the run directory is written.

    Online fine-tuning (`paper.train.online_steps` > 0, ikostrikov/implicit_q_learning train_finetune.py):
    after `num_steps` offline updates, each step acts once in `train_env` with the agent's exploration
    policy, appends the transition to the replay (which starts as the dataset) and makes one update.
    Evaluations then come every `online_eval_every` env steps, and every `switch_eval_every` in the first
    `switch_window` (to show the switch; `switch.json` sums it up: common/offline/switch.py).
    """
    p, t = cfg.paper, cfg.paper.train
    ref_min, ref_max = float(data.metadata["ref_min_score"]), float(data.metadata["ref_max_score"])
    record_dataset(ctx, cfg, data)
    agent: OfflineAgent = make_agent(cfg, env.spec, ctx.device)
    agent.prepare(data if prepare_on is None else prepare_on)
    n_online, offline_end = online_steps(cfg), int(t.num_steps)
    if n_online > 0 and train_env is None:
        raise ConfigError(f"paper.train.online_steps={n_online} needs a simulator for {cfg.env.name}")
    total = offline_end + n_online
    sampler = OfflineSampler(data, p.buffer.discount, seed=cfg.seed, reserve=n_online)
    c: dict[str, Any] = {
        "step": 0,
        "last_eval_step": -1,
        "last_return": float("nan"),
        "last_score": float("nan"),
        "elapsed": 0.0,
        "switch": switch.new_state(),
    }
    rngs: dict[str, Any] = {"sampler_rng": sampler, "env_rng": env}
    if train_env is not None:
        rngs["train_env_rng"] = train_env
    run = RunSession(
        cfg,
        ctx,
        agent,
        c,
        total_steps=total,
        unit="step",
        expect={"paper": p.name, "env": cfg.env.name, "dataset": cfg.dataset},
        rngs=rngs,
    )
    window = int(t.get("switch_window") or 0)

    def eval_due(step: int) -> bool:
        if step <= offline_end:
            return step % t.eval_every_steps == 0 or step == offline_end
        o = step - offline_end
        dense = o <= window and o % int(t.switch_eval_every) == 0
        return dense or o % int(t.online_eval_every) == 0 or step == total

    def evaluate_and_log(step: int) -> bool:
        result = run.evaluate(env, step, t.eval_episodes)
        if result is None:  # a signal cut the evaluation: it is redone on resume
            return False
        score = float(normalized_score(result["episode_return"], ref_min, ref_max))
        c["last_eval_step"], c["last_return"], c["last_score"] = step, result["episode_return"], score
        row = {"frame": step, "step": step, **result, "normalized_score": score, "time": run.elapsed()}
        if n_online > 0:
            row = {**row, "env_steps": max(0, step - offline_end), "online": float(step > offline_end)}
            if step == offline_end:
                c["switch"]["offline_score"] = c["switch"]["start_score"] = score
            switch.note_online(c["switch"], step - offline_end, score, window)
        run.log_eval(step, row)
        return True

    def save() -> None:
        """Checkpoint, with the online rows and (online) the episode in progress."""
        extra: dict[str, Any] = {"metrics": metrics.state_dict()}
        if n_online > 0:
            extra["online_rows"] = {k: torch.from_numpy(v) for k, v in sampler.added_rows().items()}
            state = env_state(train_env) if current is not None and train_env is not None else None
            obs = None if current is None else torch.from_numpy(np.array(current.obs))
            extra["episode"] = None if state is None else {"env": state, "obs": obs}
        run.save(**extra)

    metrics = Averager()  # its sums are checkpointed: a resumed run logs the same averages
    current: Step | None = None  # the online episode in progress
    if run.resumed is not None:
        if "metrics" in run.resumed:  # absent in checkpoints of earlier versions
            metrics.load_state_dict(run.resumed["metrics"])
        if run.resumed.get("online_rows") is not None:
            sampler.load_added_rows({k: v.numpy() for k, v in run.resumed["online_rows"].items()})
        episode = run.resumed.get("episode")
        if episode is not None and train_env is not None:
            cast(SavesState, train_env).set_state(episode["env"])
            current = Step(obs=episode["obs"].numpy())
    log_clock, log_step = run.clock, c["step"]
    while True:
        step = c["step"]
        if eval_due(step) and c["last_eval_step"] != step:
            if not evaluate_and_log(step):
                break
            save()
        if step >= total or run.stopped:
            break
        if step >= offline_end:  # online: one env step, then one update (train_finetune.py)
            assert train_env is not None
            if current is None:
                current = train_env.reset()
            action = agent.act(current.obs, step, eval_mode=False)
            ts = train_env.step(action)
            sampler.add(current.obs, action, float(ts.reward), ts.obs, bool(ts.terminated))
            if ts.done:
                metrics.add({"episode_return": ts.episode_return, "episode_length": ts.episode_length})
            current = None if ts.done else ts
        metrics.add(agent.update(sampler.sample(p.buffer.batch_size), step))
        run.advance()
        if c["step"] % t.log_every_steps == 0:
            now = time.perf_counter()
            rate = (c["step"] - log_step) / max(1e-9, now - log_clock)
            row = {"frame": c["step"], "step": c["step"], **metrics.pop(), "time": run.elapsed(now)}
            run.log_train({**row, "updates_per_s": rate})
            log_clock, log_step = now, c["step"]
    if run.stopped and c["last_eval_step"] != c["step"]:
        save()  # stopped between evaluations: keep the updates since
    done = c["step"] >= total
    if done and n_online > 0:
        switch.write(ctx.run_dir, c["switch"], c["last_score"], window)
    run.close({"final_return": c["last_return"], "final_normalized_score": c["last_score"]} if done else None)
    return float(c["last_return"])
