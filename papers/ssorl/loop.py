"""SS-ORL's run: hide most trajectories' actions, proxy-label them with an IDM, train any learner.

`paper.loop: papers.ssorl.loop.train`. Zheng, Henaff, Amos & Grover, ICML 2023 (arXiv 2210.06518), Alg. 1, as
facebookresearch/ssorl @cfefabe `main.py` runs it:
1. the dataset ``rlrepro/<env>/<dataset>-v0`` is split into labelled and action-free trajectories by
   `common.offline.transforms.action_free` (`paper.labelled_fraction`, `paper.selection`,
   `paper.return_quantile`,
   seeded by `paper.selection_seed`), in memory; or, with `paper.from_minari`, the same split is read from the
   Minari dataset `python -m common.offline.transforms action-free ...` wrote;
2. the IDM ensemble (`papers/ssorl/idm.py`) is trained on the labelled trajectories (`paper.idm`);
3. every action-free step gets the IDM's proxy action (`paper.proxy_labels: true`, upstream
   `data.need_pseudo_label`); with `false` the action-free trajectories are dropped instead (the "labelled
   only" baseline);
4. the learner of `learner=td3bc|iql|cql` (conf/learner/: `paper.entry`, `paper.agent`) is trained on true +
   proxy actions by the shared offline loop `common.offline.loop.run_learner`.
The proxy actions are saved in the run directory (`ssorl/proxy_actions.npy`), so a resumed run reuses them.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from omegaconf import DictConfig

from common.envs.base import EnvSpec
from common.errors import ConfigError, DatasetError
from common.loop import build_env
from common.offline import loop as offline_loop
from common.offline.data import OfflineData
from common.offline.minari_io import dataset_id, load_dataset, read_info
from common.offline.transforms import (
    action_free,
    action_free_split,
    check_selection,
    episode_lengths,
    labelled_mask,
)
from common.registry import loop
from common.runtime import RunContext
from papers.ssorl.idm import InverseDynamics, predict, train_ensemble, windows

PROXY_FILE = "proxy_actions.npy"


def _split_args(p: DictConfig) -> tuple[float, str, float, int]:
    return float(p.labelled_fraction), str(p.selection), float(p.return_quantile), int(p.selection_seed)


def validate(cfg: DictConfig) -> None:
    p = cfg.paper
    f, rule, q, _ = _split_args(p)
    if not 0.0 <= f < 1.0:  # before anything else: nothing is read or written
        raise ConfigError(
            f"paper.labelled_fraction={p.labelled_fraction} must be in [0, 1): the share of trajectories "
            f"that keep their actions (e.g. 0.1)"
        )
    try:
        check_selection(f, rule, q)
    except ConfigError as err:
        raise ConfigError(f"paper.selection / paper.return_quantile: {err}") from None
    offline_loop.validate(cfg)
    i = p.idm
    checks = [
        (int(i.ensemble_size) >= 1, f"paper.idm.ensemble_size={i.ensemble_size} must be >= 1"),
        (int(i.window) >= 0, f"paper.idm.window={i.window} (past states k) must be >= 0"),
        (len(i.hidden_dims) >= 1, "paper.idm.hidden_dims must list at least one layer width"),
        (int(i.train_steps) >= 1, f"paper.idm.train_steps={i.train_steps} must be >= 1"),
        (int(i.batch_size) >= 1, f"paper.idm.batch_size={i.batch_size} must be >= 1"),
        (int(i.eval_every) >= 1, f"paper.idm.eval_every={i.eval_every} must be >= 1"),
        (
            0.0 <= float(i.validation_fraction) < 1.0,
            f"paper.idm.validation_fraction={i.validation_fraction} must be in [0, 1)",
        ),
        (0.0 <= float(i.dropout) < 1.0, f"paper.idm.dropout={i.dropout} must be in [0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if p.from_minari:
        split = action_free_split(cfg.dataset, *_split_args(p))
        if read_info(cfg.env.name, split) is None:
            f, rule, q, seed = _split_args(p)
            raise DatasetError(
                f"dataset {dataset_id(cfg.env.name, split)} not found; make it with: python -m "
                f"common.offline.transforms action-free --env {cfg.env.name} --split {cfg.dataset} "
                f"--labelled {f} --rule {rule} --quantile {q} --seed {seed}"
            )


def semi_supervised_data(
    cfg: DictConfig, spec: EnvSpec | None
) -> tuple[OfflineData, OfflineData, np.ndarray]:
    """(the full dataset with true actions, the semi-supervised one with NaN actions, labelled mask (E,))."""
    p = cfg.paper
    data = load_dataset(cfg.env.name, cfg.dataset, spec)
    if p.from_minari:
        split = action_free_split(cfg.dataset, *_split_args(p))
        semi = load_dataset(cfg.env.name, split, spec, allow_action_free=True)
        if len(semi) != len(data) or not np.array_equal(semi.observations, data.observations):
            raise DatasetError(
                f"{dataset_id(cfg.env.name, split)} was not made from {cfg.dataset}; remake it"
            )
    else:
        semi, _ = action_free(data, *_split_args(p))
    return data, semi, labelled_mask(semi)


def proxy_label(
    cfg: DictConfig, semi: OfflineData, labelled: np.ndarray, device: torch.device
) -> tuple[np.ndarray, dict]:
    """Train the IDM ensemble on the labelled episodes; the proxy actions of every row and the IDM's stats."""
    i = cfg.paper.idm
    mean = semi.observations.astype(np.float64).mean(0)
    std = semi.observations.astype(np.float64).std(0) + float(i.state_norm_eps)
    inputs = windows(semi.observations, semi.next_observations, semi.episode_starts, int(i.window), mean, std)
    episode_of_row = np.repeat(np.arange(len(labelled)), episode_lengths(semi))
    actions = np.nan_to_num(semi.actions, nan=0.0)  # NaN rows never enter the loss (labelled rows only)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(cfg.seed))
        members = [
            InverseDynamics(
                inputs.shape[1],
                semi.actions.shape[1],
                [int(h) for h in i.hidden_dims],
                float(i.dropout),
                float(i.log_std_min),
                float(i.log_std_max),
            ).to(device)
            for _ in range(int(i.ensemble_size))
        ]
        stats = train_ensemble(
            members,
            inputs,
            actions,
            episode_of_row,
            np.flatnonzero(labelled),
            lr=float(i.lr),
            batch_size=int(i.batch_size),
            train_steps=int(i.train_steps),
            validation_fraction=float(i.validation_fraction),
            eval_every=int(i.eval_every),
            seed=int(cfg.seed),
            device=device,
        )
        proxy, uncertainty = predict(members, inputs, device)
    rows_free = ~np.repeat(labelled, episode_lengths(semi))
    stats["uncertainty_action_free"] = (
        float(uncertainty[rows_free].mean()) if rows_free.any() else float("nan")
    )
    return proxy, stats


def _episodes(data: OfflineData, keep: np.ndarray) -> OfflineData:
    """The episodes where `keep` (E,) is True, in dataset order."""
    lengths = episode_lengths(data)
    rows = np.repeat(keep, lengths)
    return OfflineData(
        observations=data.observations[rows],
        actions=data.actions[rows],
        rewards=data.rewards[rows],
        next_observations=data.next_observations[rows],
        terminations=data.terminations[rows],
        truncations=data.truncations[rows],
        episode_starts=np.concatenate([[0], np.cumsum(lengths[keep])[:-1]]).astype(np.int64),
        metadata=dict(data.metadata),
    )


@loop(validate=validate)
def train(cfg: DictConfig, ctx: RunContext) -> float:
    """Split, proxy-label, then train `cfg.paper.entry` on the result; returns the final evaluation return."""
    p = cfg.paper
    env = build_env(cfg, cfg.seed)
    try:
        data, semi, labelled = semi_supervised_data(cfg, env.spec)
        if not labelled.any():
            raise DatasetError(
                f"no trajectory of {len(labelled)} is labelled "
                f"(paper.labelled_fraction={p.labelled_fraction}, "
                f"return_quantile={p.return_quantile}); raise the fraction"
            )
        rows_free = ~np.repeat(labelled, episode_lengths(semi))
        info = {
            "labelled_episodes": f"{int(labelled.sum())}/{len(labelled)}",
            "labelled_transitions": f"{int((~rows_free).sum())}/{len(semi)}",
            "selection": p.selection,
            "labelled_fraction": float(p.labelled_fraction),
            "return_quantile": float(p.return_quantile),
            "proxy_labels": bool(p.proxy_labels),
        }
        if p.proxy_labels and rows_free.any():
            out = ctx.run_dir / "ssorl"
            out.mkdir(exist_ok=True)
            if (out / PROXY_FILE).exists():  # a resumed run: the same labels as before
                proxy = np.load(out / PROXY_FILE)
            else:
                proxy, stats = proxy_label(cfg, semi, labelled, torch.device(ctx.device))
                # the true actions are known here (a benchmark transform): how close the proxies are
                stats["proxy_mse_action_free"] = float(
                    np.mean((proxy[rows_free] - data.actions[rows_free]) ** 2)
                )
                stats["proxy_mse_labelled"] = float(
                    np.mean((proxy[~rows_free] - data.actions[~rows_free]) ** 2)
                )
                np.save(out / PROXY_FILE, proxy)
                (out / "idm.json").write_text(json.dumps(stats, indent=1))
                info.update(stats)
            actions = semi.actions.copy()
            actions[rows_free] = proxy[rows_free]
            train_data = OfflineData(
                semi.observations, actions, semi.rewards, semi.next_observations, semi.terminations,
                semi.truncations, semi.episode_starts, dict(data.metadata),
            )  # fmt: skip
        else:
            train_data = _episodes(semi, labelled)  # the labelled trajectories only
        assert not np.isnan(train_data.actions).any()  # no NaN ever reaches a learner
        ctx.info["ssorl"] = info  # written to run.json by the offline loop
        return offline_loop.run_learner(cfg, ctx, env, train_data)
    finally:
        env.close()
