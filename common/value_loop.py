"""`train_value_online`: `common.loop.train_online` for value-based agents, with every setting checked before
the run directory is written.

The shared loop validates sizes only; the env (an unknown game, pixels from MinAtar) and the agent (an unknown
value loss, v_min >= v_max, fewer than 2 bins, a network that does not fit the observations) are otherwise
built after the run directory exists. Here both are built once, on the CPU, and thrown away, so a bad
command fails with one line and writes nothing. Envs and agents of the discrete family are cheap to build.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from common.loop import ReplayUpdates, build_env, run_loop, validate_run
from common.registry import loop
from common.runtime import RunContext
from common.session import make_agent
from common.value_losses import check_value_loss


def validate(cfg: DictConfig) -> None:
    """The shared loop's checks, the value loss (`paper.agent`), then the env and the agent, built once."""
    validate_run(cfg)
    ReplayUpdates.validate(cfg)
    check_value_loss(cfg.paper.agent)
    env = build_env(cfg, cfg.seed)
    try:
        make_agent(cfg, env.spec, torch.device("cpu"))
    finally:
        env.close()


@loop(validate=validate)
def train_value_online(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (a value-based `Agent`) with a replay; returns the final evaluation return."""
    return run_loop(cfg, ctx, ReplayUpdates)
