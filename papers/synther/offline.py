"""Offline SynthER: upsample a D4RL-protocol dataset, then train offline learners on real or synthetic data.

conglu1997/SynthER @e6835a5: `synther/diffusion/train_diffuser.py` (fit on `d4rl.qlearning_dataset`, save
`--save_num_samples` 5M samples) then `synther/corl/algorithms/{td3_bc,iql}.py --diffusion.path ...`, whose
buffer holds the synthetic samples only. Here one run does both, for every `synther.offline.algos` x
`synther.offline.train_on` pair, each learner through the shared offline loop (`common.offline.loop`) in its
own sub-directory, and writes the D4RL normalised scores side by side:

  <run_dir>/synther/upsampler.pt, synthetic.npz, quality.json   the model, its samples, their quality
  <run_dir>/<algo>_<data>/{train,eval}.jsonl, checkpoints/      each learner, as a `paper=<algo>` run
  <run_dir>/scores.json                                         {algo: {data: final normalised score}}

Each learner runs with `synther.offline.<algo>` as its `paper` section: its plugin's values with SynthER's own
(CORL's, per dataset) over them, all resolved by the config (conf/paper/synther.yaml and
conf/paper_env/synther_<env>.yaml), which this module never modifies. Data kinds: `real` (the dataset),
`synthetic` (samples only: the paper's setting), `both` (real + synthetic concatenated). As in SynthER's CORL
scripts, the learners' state and reward normalisers (`prepare`) always come from the real dataset. A resume
reloads the saved upsampler and samples (no refit), skips finished learners and resumes the interrupted one
from its checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.buffers.diffusion import (
    KEYS,
    DiffusionConfig,
    MujocoDynamicsCheck,
    TransitionUpsampler,
    quality_report,
)
from common.errors import ConfigError
from common.evaluation.normalization import normalized_score
from common.loop import build_env
from common.offline import loop as offline_loop
from common.offline.data import OfflineData
from common.offline.minari_io import load_dataset
from common.registry import loop
from common.runtime import RunContext, write_json

ALGOS = ("td3bc", "iql")
DATA = ("real", "synthetic", "both")


def learner_config(cfg: DictConfig, algo: str) -> DictConfig:
    """The run's config with `paper` = `synther.offline.<algo>`: what `common.offline.loop` reads."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    tree["paper"] = tree["synther"]["offline"][algo]
    sub = OmegaConf.create(tree)
    OmegaConf.set_readonly(sub, True)
    return sub


def diffusion_config(cfg: DictConfig, transitions: int) -> DiffusionConfig:
    values = dict(OmegaConf.to_container(cfg.synther.diffusion, resolve=True))  # type: ignore[arg-type]
    if values["batch_size"] is None:  # train_diffuser.py: batch 1024 when the dataset has >= 800k rows
        values["batch_size"] = 1024 if transitions >= 800_000 else 256
    return DiffusionConfig.from_mapping(values)


def validate(cfg: DictConfig) -> None:
    o = cfg.synther.offline
    if cfg.synther.mode != "offline":
        raise ConfigError(
            f"synther.mode={cfg.synther.mode} does not use the offline loop; set synther.mode=offline"
        )
    bad = [a for a in o.algos if a not in ALGOS] + [d for d in o.train_on if d not in DATA]
    if bad or not o.algos or not o.train_on:
        raise ConfigError(
            f"synther.offline.algos={list(o.algos)} / train_on={list(o.train_on)}: choose non-empty lists "
            f"from {', '.join(ALGOS)} / {', '.join(DATA)}"
        )
    if o.num_samples < 1:
        raise ConfigError(f"synther.offline.num_samples={o.num_samples} must be >= 1")
    for algo in o.algos:
        offline_loop.validate(learner_config(cfg, algo))
    diffusion_config(cfg, 0)


def as_offline_data(t: dict[str, np.ndarray], metadata: dict[str, Any]) -> OfflineData:
    """Synthetic transitions as `OfflineData`: one pseudo-episode, no truncations (no episode structure)."""
    n = len(t["rewards"])
    return OfflineData(
        observations=np.asarray(t["observations"], np.float32),
        actions=np.asarray(t["actions"], np.float32),
        rewards=np.asarray(t["rewards"], np.float32),
        next_observations=np.asarray(t["next_observations"], np.float32),
        terminations=np.asarray(t["terminations"], bool),
        truncations=np.zeros(n, bool),
        episode_starts=np.zeros(1, np.int64),
        metadata={**metadata, "synthetic": True},
    )


def real_transitions(data: OfflineData) -> dict[str, np.ndarray]:
    return {k: getattr(data, k) for k in KEYS}


def upsample(cfg: DictConfig, ctx: RunContext, data: OfflineData) -> OfflineData:
    """Fit the upsampler on `data` and draw `num_samples` (or reload both after a resume)."""
    o, out = cfg.synther.offline, ctx.run_dir / "synther"
    obs_dim, action_dim = data.observations.shape[1], data.actions.shape[1]
    samples = out / "synthetic.npz"
    if samples.exists():  # written last: the fit and the draw are complete
        with np.load(samples) as z:
            return as_offline_data({k: z[k] for k in KEYS}, data.metadata)
    out.mkdir(parents=True, exist_ok=True)
    up = TransitionUpsampler(
        diffusion_config(cfg, len(data)), obs_dim, action_dim, ctx.device, cfg.precision, cfg.seed
    )
    real = real_transitions(data)
    model, fit_file = out / "upsampler.pt", out / "fit.json"
    if model.exists() and fit_file.exists():  # fitted before an interruption: draw again, never refit
        up.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
        fit_stats = json.loads(fit_file.read_text())
    else:
        fit = up.fit(real)
        fit_stats = {"loss": fit.loss, "fit_seconds": fit.seconds}
        tmp = out / "upsampler.tmp.pt"
        torch.save(up.state_dict(), tmp)
        os.replace(tmp, model)
        write_json(fit_file, fit_stats)
    synthetic = up.sample(int(o.num_samples))
    report = quality_report(
        real, {k: v[: o.quality_samples] for k, v in synthetic.items()}, up.last_action_out_of_bounds
    )
    report.update(fit_stats, real_transitions=len(data), samples=int(o.num_samples))
    if o.dynamics_check > 0 and cfg.env.suite == "gym" and cfg.paper.action_repeat == 1:
        check = MujocoDynamicsCheck(cfg.env.id)
        if check.supported and check.obs_dim == obs_dim:
            report["dynamics_error"] = check.error(synthetic, int(o.dynamics_check))
            report["dynamics_error_real"] = check.error(real, int(o.dynamics_check))  # ~0 unless qvel clipped
        check.close()
    write_json(out / "quality.json", report)
    if o.save_samples:
        tmp = out / "synthetic.tmp.npz"
        np.savez(tmp, **synthetic)  # type: ignore[arg-type]  # numpy 2 stubs: allow_pickle could be a key
        os.replace(tmp, samples)
    print(
        f"synther: fitted on {len(data)} transitions in {fit_stats['fit_seconds']:.0f}s, "
        f"{o.num_samples} samples; "
        f"mean |z| {report['mean_abs_z']:.3f}, action out of bounds {report['action_out_of_bounds']:.3f}"
        + (f", dynamics error {report['dynamics_error']:.3f}" if "dynamics_error" in report else "")
    )
    return as_offline_data(synthetic, data.metadata)


def train(cfg: DictConfig, ctx: RunContext) -> float:
    """`paper.loop` of `synther.mode=offline`; writes every D4RL normalised score to scores.json and returns
    the first algo's final evaluation return on synthetic data (else its first one), raw like any run's."""
    # `resume=` needs a checkpoints/ directory; this run's state is synther/ and each learner's checkpoints.
    (ctx.run_dir / "checkpoints").mkdir(exist_ok=True)
    env = build_env(cfg, cfg.seed)
    try:
        data = load_dataset(cfg.env.name, cfg.dataset, env.spec)
        offline_loop.record_dataset(ctx, cfg, data)  # reports normalise this run with the dataset's bounds
        synthetic = (
            upsample(cfg, ctx, data) if {"synthetic", "both"} & set(cfg.synther.offline.train_on) else None
        )
        sets = {"real": data}  # `validate` made sure that train_on names only these
        if synthetic is not None:
            sets.update(synthetic=synthetic, both=data.concat(synthetic))
        scores: dict[str, dict[str, float]] = {}
        returns: dict[str, dict[str, float]] = {}
        for algo in cfg.synther.offline.algos:
            sub_cfg = learner_config(cfg, algo)
            for kind in cfg.synther.offline.train_on:
                final = _train_learner(sub_cfg, ctx, env, sets[kind], f"{algo}_{kind}", data)
                if final is None:  # stopped by a signal: its checkpoint continues it on resume
                    return float("nan")
                returns.setdefault(algo, {})[kind] = final
                ref = data.metadata
                score = float(normalized_score(final, ref["ref_min_score"], ref["ref_max_score"]))
                scores.setdefault(algo, {})[kind] = score
                write_json(ctx.run_dir / "scores.json", scores)
        _print_table(scores)
        first = returns[cfg.synther.offline.algos[0]]
        return float(first.get("synthetic", next(iter(first.values()))))
    finally:
        env.close()


def _train_learner(
    cfg: DictConfig, ctx: RunContext, env: Any, data: OfflineData, name: str, real: OfflineData
) -> float | None:
    run_dir: Path = ctx.run_dir / name
    done = run_dir / "done.json"
    if done.exists():
        return float(json.loads(done.read_text())["final_return"])
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = (run_dir / "checkpoints" / "latest").exists()
    info = {**ctx.info, "wandb_id": f"{ctx.info.get('wandb_id', 'run')}-{name}"}
    sub = RunContext(run_dir=run_dir, device=ctx.device, resuming=resuming, stop=ctx.stop, info=info)
    # SynthER's CORL scripts take the state/reward normalisers from the real D4RL data: `prepare` sees it
    final = offline_loop.run_learner(cfg, sub, env, data, prepare_on=real)
    if ctx.stop:
        return None
    write_json(done, {"final_return": final})
    return final


def _print_table(scores: dict[str, dict[str, float]]) -> None:
    kinds = sorted({k for s in scores.values() for k in s}, key=DATA.index)
    print("D4RL normalised score  " + "  ".join(f"{k:>10}" for k in kinds))
    for algo, s in scores.items():
        print(f"{algo:<22}  " + "  ".join(f"{s.get(k, float('nan')):>10.1f}" for k in kinds))


train = loop(validate=validate)(train)  # common.launch validates once, before writing the run dir
