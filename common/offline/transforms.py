"""Dataset transforms: hide the actions of a fraction of the trajectories (SS-ORL's semi-supervised data).

Zheng, Henaff, Amos & Grover, ICML 2023 ("Semi-Supervised Offline Reinforcement Learning with Action-Free
Trajectories", arXiv 2210.06518), selection rules of facebookresearch/ssorl @cfefabe `data.py`
(`load_dataset`, `setup_action_label`) with `config/config.yaml` (`data.action_available_perc` 0.1,
`data.action_available_threshold` 0.5):

- the E trajectories are ranked by return, lowest first;
- the labelled ones are ``min(int(E * q), int(E * p))`` trajectories drawn uniformly without replacement from
  the ``int(E * q)`` lowest-return ones (p = the labelled fraction, q = the return quantile);
- every other trajectory is action-free.

`rule="lowest"` uses q (0.5 upstream: "10% of trajectories, whose returns are from the lower 50%"; q = p
labels
exactly the p lowest-return trajectories); `rule="random"` is q = 1, a uniform draw over all trajectories.
Action-free rows hold NaN actions; the written dataset's sidecar also lists the labelled episodes.
`common.offline.minari_io.load_dataset` refuses NaN actions unless asked (`allow_action_free=True`), so no
learner is ever fed one by mistake.

Command (one line and exit status 2 on bad input, nothing written)::

    python -m common.offline.transforms action-free --env hopper --split medium-replay --labelled 0.1 \\
        --rule lowest [--quantile 0.5] [--seed 0] [--overwrite]

writes ``rlrepro/hopper/medium-replay_labelled10-lowest50-s0-v0`` (see `action_free_split`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

from common.errors import ConfigError, DatasetError
from common.offline.data import OfflineData

RULES = ("random", "lowest")


def check_selection(fraction: float, rule: str, quantile: float) -> None:
    """One-line ConfigErrors for a bad labelled fraction, rule or return quantile."""
    if not 0.0 <= float(fraction) < 1.0:
        raise ConfigError(
            f"labelled fraction {fraction} must be in [0, 1): the share of trajectories that keep their "
            f"actions (e.g. 0.1)"
        )
    if rule not in RULES:
        raise ConfigError(f"selection rule {rule!r} must be one of {', '.join(RULES)}")
    if not 0.0 < float(quantile) <= 1.0:
        raise ConfigError(f"return quantile {quantile} must be in (0, 1] (0.5: the lower half by return)")


def episode_lengths(data: OfflineData) -> np.ndarray:
    return np.diff(np.append(data.episode_starts, len(data)))


def select_labelled(
    returns: np.ndarray, fraction: float, rule: str, quantile: float, seed: int
) -> np.ndarray:
    """Indices (ascending) of the labelled trajectories among E with these `returns` (ssorl
    `setup_action_label` on the return-sorted list). Ties in return keep dataset order (stable sort)."""
    check_selection(fraction, rule, quantile)
    n = len(returns)
    upper = int(n * (1.0 if rule == "random" else float(quantile)))
    size = min(upper, int(n * float(fraction)))
    order = np.argsort(np.asarray(returns, np.float64), kind="stable")  # lowest return first
    picked = np.random.default_rng(seed).choice(upper, size=size, replace=False)
    return np.sort(order[picked]).astype(np.int64)


def labelled_mask(data: OfflineData) -> np.ndarray:
    """Per episode: True when its actions are known (no NaN), shape (E,)."""
    has_nan = np.isnan(data.actions).any(axis=tuple(range(1, data.actions.ndim)))
    return ~np.logical_or.reduceat(has_nan, data.episode_starts)


def make_action_free(data: OfflineData, labelled: np.ndarray, provenance: dict | None = None) -> OfflineData:
    """A copy of `data` whose episodes outside `labelled` have NaN actions; metadata gains `action_free`."""
    lengths = episode_lengths(data)
    keep = np.zeros(len(lengths), bool)
    keep[np.asarray(labelled, np.int64)] = True
    rows = np.repeat(keep, lengths)
    actions = data.actions.astype(np.float32).copy()
    actions[~rows] = np.nan
    meta = dict(data.metadata)
    meta["action_free"] = {
        **(provenance or {}),
        "labelled_episodes": [int(i) for i in np.flatnonzero(keep)],
        "episodes": int(len(lengths)),
    }
    return replace(data, actions=actions, metadata=meta)


def action_free(
    data: OfflineData, fraction: float, rule: str, quantile: float, seed: int
) -> tuple[OfflineData, np.ndarray]:
    """SS-ORL's split of `data`: (the dataset, NaN actions on the unlabelled episodes; labelled indices)."""
    labelled = select_labelled(data.episode_returns(), fraction, rule, quantile, seed)
    provenance = {"fraction": float(fraction), "rule": rule, "quantile": float(quantile), "seed": int(seed)}
    return make_action_free(data, labelled, provenance), labelled


def action_free_split(split: str, fraction: float, rule: str, quantile: float, seed: int) -> str:
    """The derived split's name, e.g. ``medium-replay_labelled10-lowest50-s0`` (2.5% -> ``labelled2p5``)."""
    pct = format(round(float(fraction) * 100, 6), "g").replace(".", "p")
    tail = (
        f"lowest{format(round(float(quantile) * 100, 6), 'g').replace('.', 'p')}"
        if rule == "lowest"
        else rule
    )
    return f"{split}_labelled{pct}-{tail}-s{int(seed)}"


def main(argv: list[str] | None = None) -> int:
    from common.offline.minari_io import check_split, dataset_id, load_dataset, write_dataset

    parser = argparse.ArgumentParser(
        prog="python -m common.offline.transforms", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    af = sub.add_parser("action-free", help="make a fraction of the trajectories action-free (SS-ORL)")
    af.add_argument("--env", required=True)
    af.add_argument("--split", required=True)
    af.add_argument(
        "--labelled", type=float, required=True, help="fraction of trajectories that keep actions"
    )
    af.add_argument("--rule", default="lowest", help="lowest (from the lowest-return quantile) or random")
    af.add_argument("--quantile", type=float, default=0.5, help="rule lowest: the return quantile drawn from")
    af.add_argument("--seed", type=int, default=0)
    af.add_argument("--overwrite", action="store_true")
    pool = sub.add_parser(
        "pool",
        help="write ReCOIL's pool (a suboptimal split + expert episodes) as a split, e.g. for BC on all data",
    )
    pool.add_argument("--env", required=True)
    pool.add_argument("--expert", default="expert")
    pool.add_argument("--suboptimal", default="random")
    pool.add_argument("--pool-expert-episodes", type=int, default=200)
    pool.add_argument("--seed", type=int, default=1, help="as papers/dual_rl's paper.mixture_seed")
    pool.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "pool":
        return write_pool(args)
    try:
        check_selection(args.labelled, args.rule, args.quantile)
        check_split(args.split)
        data = load_dataset(args.env, args.split)
        out, labelled = action_free(data, args.labelled, args.rule, args.quantile, args.seed)
        split = action_free_split(args.split, args.labelled, args.rule, args.quantile, args.seed)
        info = {
            "algorithm": "rlrepro action-free transform (SS-ORL)",
            "source": dataset_id(args.env, args.split),
            "action_free": out.metadata["action_free"],
            "policy": data.metadata.get("policy"),
        }
        path = write_dataset(args.env, split, out, info, overwrite=args.overwrite)
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{dataset_id(args.env, split)}: {len(labelled)}/{len(data.episode_starts)} labelled -> {path}")
    return 0


def write_pool(args: argparse.Namespace) -> int:
    """ReCOIL's pool (common/offline/mixtures.py, the same seeded episode choice as `paper.mixture_seed`) as
    the split ``<suboptimal>_pool<N>-s<seed>``: the data "BC on all data" learns from in results/dual_rl."""
    from common.offline.minari_io import check_split, dataset_id, load_dataset, write_dataset
    from common.offline.mixtures import compose_mixture

    try:
        for split in (args.expert, args.suboptimal):
            check_split(split)
        expert, suboptimal = load_dataset(args.env, args.expert), load_dataset(args.env, args.suboptimal)
        try:
            mix = compose_mixture(expert, suboptimal, 1, args.pool_expert_episodes, args.seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        split = f"{args.suboptimal}_pool{args.pool_expert_episodes}-s{args.seed}"
        info = {
            "algorithm": "rlrepro ReCOIL pool (common.offline.mixtures)",
            "source": [dataset_id(args.env, args.suboptimal), dataset_id(args.env, args.expert)],
            "pool": mix.info,
            "policy": suboptimal.metadata.get("policy"),
        }
        path = write_dataset(args.env, split, mix.pool, info, overwrite=args.overwrite)
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{dataset_id(args.env, split)}: {len(mix.pool)} transitions -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
