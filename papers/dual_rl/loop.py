"""Dual RL's run: `paper.mode=fdvl` trains f-DVL on one dataset with the shared offline loop;
`paper.mode=recoil` composes ReCOIL's data (expert demonstrations + a mixed pool, `common.offline.mixtures`)
and trains ReCOIL with the same loop, the pool sampled by the loop and the demonstrations by the agent.

`paper.loop: papers.dual_rl.loop.train`. ReCOIL's splits come from `paper.expert_dataset` and
`paper.suboptimal_dataset` (the top-level `dataset=` is for fdvl); the shared loop sees a read-only copy of
the config whose `dataset` names the suboptimal split (the pool's base, which run.json records), and
run.json's `recoil_data` records the composition. A missing split fails before the run directory is
written, naming the command that makes it.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from common.errors import ConfigError, DatasetError
from common.loop import build_env
from common.offline import loop as offline_loop
from common.offline.minari_io import check_split, dataset_id, datasets_root, load_dataset, read_info
from common.offline.mixtures import compose_mixture
from common.registry import loop
from common.runtime import RunContext

MODES = ("fdvl", "recoil")


def pool_config(cfg: DictConfig) -> DictConfig:
    """The run's config with `dataset` = the suboptimal split: what `common.offline.loop` reads for ReCOIL."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    tree["dataset"] = tree["paper"]["suboptimal_dataset"]
    sub = OmegaConf.create(tree)
    OmegaConf.set_readonly(sub, True)
    return sub


def validate(cfg: DictConfig) -> None:
    p = cfg.paper
    if p.get("mode") not in MODES:
        raise ConfigError(f"paper.mode={p.get('mode')!r} must be one of {', '.join(MODES)}")
    if p.mode == "fdvl":
        offline_loop.validate(cfg)
        return
    if cfg.get("dataset") is not None:
        raise ConfigError(
            f"paper.mode=recoil takes its data from paper.expert_dataset and paper.suboptimal_dataset; drop "
            f"dataset={cfg.dataset} (e.g. paper.suboptimal_dataset={cfg.dataset})"
        )
    expert_split, sub_split = check_split(p.expert_dataset), check_split(p.suboptimal_dataset)
    if int(p.num_expert_episodes) < 1:
        raise ConfigError(f"paper.num_expert_episodes={p.num_expert_episodes} must be at least 1")
    if int(p.pool_expert_episodes) < 0:
        raise ConfigError(f"paper.pool_expert_episodes={p.pool_expert_episodes} must be >= 0")
    env = cfg.env.name
    info = read_info(env, expert_split)
    if info is None:
        raise DatasetError(
            f"expert dataset {dataset_id(env, expert_split)} not found under {datasets_root()} "
            f"(MINARI_DATASETS_PATH); generate it with: python run.py paper=d4rl env={env}"
        )
    if int(p.num_expert_episodes) > int(info.get("episodes", 0)):
        raise ConfigError(
            f"paper.num_expert_episodes={p.num_expert_episodes} exceeds the {info.get('episodes')} episodes "
            f"of {dataset_id(env, expert_split)}; lower it"
        )
    offline_loop.validate(pool_config(cfg))  # the suboptimal split exists, the training keys are sane
    del sub_split


@loop(validate=validate)
def train(cfg: DictConfig, ctx: RunContext) -> float:
    """f-DVL on `dataset`, or ReCOIL on (demonstrations, pool); returns the final evaluation return."""
    if cfg.paper.mode == "fdvl":
        return offline_loop.train_offline(cfg, ctx)
    p = cfg.paper
    sub_cfg = pool_config(cfg)
    env = build_env(cfg, cfg.seed)
    try:
        expert = load_dataset(cfg.env.name, p.expert_dataset, env.spec)
        suboptimal = load_dataset(cfg.env.name, p.suboptimal_dataset, env.spec)
        mix = compose_mixture(
            expert, suboptimal, int(p.num_expert_episodes), int(p.pool_expert_episodes), int(p.mixture_seed)
        )
        ctx.info["recoil_data"] = {  # written to run.json with the dataset's provenance
            "expert_dataset": dataset_id(cfg.env.name, p.expert_dataset),
            "suboptimal_dataset": dataset_id(cfg.env.name, p.suboptimal_dataset),
            **mix.info,
        }
        return offline_loop.run_learner(sub_cfg, ctx, env, mix.pool, prepare_on=mix.expert)
    finally:
        env.close()
