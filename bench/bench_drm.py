"""DrM's cost over DrQ-v2: updates/s of both agents at batch 256 on random 9x84x84 uint8 observations.

Run from the repository root:

    python bench/bench_drm.py --threads 2 --updates 3 --rounds 5

Prints one JSON object. For each action dim (6: cheetah-like, 38: dog) both agents are built with the same
shared settings (paper sizes: hidden 1024, feature_dim 50 for action dim 6 and 100 for 38 as DrM's task
configs use) and timed in the same process, alternating DrQ-v2 and DrM for `--rounds` rounds of `--updates`
updates each, so that load changes on a shared host hit both alike. Figures are medians over rounds;
`drm_overhead` = DrM ms/update / DrQ-v2 ms/update - 1 (target: <= 0.25). DrM's updates run at a step that
is not a perturbation step; the cost of one perturbation (every 100k agent steps) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from bench_update import random_batch  # bench/ is on sys.path when run as a script
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.runtime import cpu_name
from papers.drm.agent import DrMAgent
from papers.drqv2.agent import DrQV2Agent

SHARED = dict(
    lr=1e-4,
    hidden_dim=1024,
    critic_target_tau=0.01,
    num_expl_steps=2000,
    stddev_schedule="linear(1.0,0.1,500000)",
    stddev_clip=0.3,
)
DRM_EXTRA = dict(
    dormant_threshold=0.025,
    target_dormant_ratio=0.2,
    dormant_temp=10.0,
    lambda_temp=50.0,
    perturb_interval=100000,
    min_perturb_factor=0.2,
    max_perturb_factor=0.6,
    perturb_rate=2.0,
    expectile=0.9,
    target_lambda=0.6,
)
FEATURE_DIM = {6: 50, 38: 100}  # DrM cfgs: feature_dim 50 by default, 100 for dog and humanoid


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(agent: object, batch: Batch, step: int, updates: int, device: torch.device) -> float:
    """Seconds per update over `updates` updates (each returns python floats: a device sync per update)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(batch, step)  # type: ignore[attr-defined]
    sync(device)
    return (time.perf_counter() - start) / updates


def compare(
    device: torch.device, precision: str, action_dim: int, feature_dim: int, args: argparse.Namespace
) -> dict:
    spec = EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (action_dim,), 2, 500, True)
    cfg = dict(SHARED, feature_dim=feature_dim)
    torch.manual_seed(0)
    drqv2 = DrQV2Agent(OmegaConf.create(cfg), spec, device, precision)
    torch.manual_seed(0)
    drm = DrMAgent(OmegaConf.create(dict(cfg, **DRM_EXTRA)), spec, device, precision)
    batch = random_batch(np.random.default_rng(0), args.batch, action_dim)
    step = 10_000  # past the exploration phase, not a perturbation step
    for _ in range(args.warmup):
        drqv2.update(batch, step)
        drm.update(batch, step)
    base, ours = [], []
    for _ in range(args.rounds):  # alternate, so both see the same host load
        base.append(timed(drqv2, batch, step, args.updates, device))
        ours.append(timed(drm, batch, step, args.updates, device))
    sync(device)
    start = time.perf_counter()
    drm.perturb()
    sync(device)
    perturb_s = time.perf_counter() - start
    t_base, t_ours = statistics.median(base), statistics.median(ours)
    return {
        "action_dim": action_dim,
        "feature_dim": feature_dim,
        "precision": precision,
        "drqv2_updates_per_s": round(1 / t_base, 3),
        "drm_updates_per_s": round(1 / t_ours, 3),
        "drqv2_ms_per_update": round(1000 * t_base, 1),
        "drm_ms_per_update": round(1000 * t_ours, 1),
        "drm_overhead": round(t_ours / t_base - 1, 3),
        # per round, to judge the noise of a shared host
        "drm_overhead_per_round": [round(o / b - 1, 3) for b, o in zip(base, ours, strict=True)],
        "perturb_ms": round(1000 * perturb_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    parser.add_argument("--updates", type=int, default=3, help="timed updates per agent per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating DrQ-v2/DrM rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed updates of each agent first")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--action-dims", type=int, nargs="+", default=[6, 38])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = [compare(device, args.precision, a, FEATURE_DIM.get(a, 50), args) for a in args.action_dims]
    report = {
        "benchmark": "drm_vs_drqv2_update",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch,
        "obs_shape": [9, 84, 84],
        "updates": args.updates,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
