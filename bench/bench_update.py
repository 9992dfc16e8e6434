"""DrQ-v2 update throughput: updates/s at batch 256 on random 9x84x84 uint8 observations.

Run from the repository root:

    python bench/bench_update.py --threads 2 --updates 5

Prints one JSON object. Each (action_dim, precision) pair gets a fresh agent with the paper's network
sizes (feature_dim 50, hidden_dim 1024), `--warmup` untimed updates, then `--updates` timed updates. The
timing includes the host-to-device batch copy, as in training (batch sampling itself is not included).
Wall time is what counts; `cpu_s_per_update` (process CPU time) helps to read figures from a shared host.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.runtime import cpu_name
from papers.drqv2.agent import DrQV2Agent

PAPER_AGENT = dict(
    lr=1e-4,
    feature_dim=50,
    hidden_dim=1024,
    critic_target_tau=0.01,
    num_expl_steps=2000,
    stddev_schedule="linear(1.0,0.1,500000)",
    stddev_clip=0.3,
)


def random_batch(rng: np.random.Generator, batch_size: int, action_dim: int) -> Batch:
    obs_shape = (batch_size, 9, 84, 84)
    return Batch(
        obs=rng.integers(0, 256, obs_shape, dtype=np.uint8),
        action=rng.uniform(-1, 1, (batch_size, action_dim)).astype(np.float32),
        reward=rng.uniform(0, 1, (batch_size, 1)).astype(np.float32),
        discount=np.full((batch_size, 1), 0.99**3, dtype=np.float32),
        next_obs=rng.integers(0, 256, obs_shape, dtype=np.uint8),
    )


def time_updates(
    device: torch.device, precision: str, action_dim: int, batch_size: int, warmup: int, updates: int
) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    spec = EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (action_dim,), 2, 500, True)
    agent = DrQV2Agent(OmegaConf.create(PAPER_AGENT), spec, device, precision)
    batch = random_batch(np.random.default_rng(0), batch_size, action_dim)
    step = 10_000  # past the exploration phase
    for _ in range(warmup):
        agent.update(batch, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(updates):
        agent.update(batch, step)  # returns python floats: each update ends with a device sync
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "action_dim": action_dim,
        "precision": precision,
        "updates_per_s": round(updates / elapsed, 3),
        "ms_per_update": round(1000 * elapsed / updates, 1),
        # process CPU time: on a shared host it varies less with other jobs' load than wall time
        "cpu_s_per_update": round(cpu / updates, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    parser.add_argument("--updates", type=int, default=5, help="timed updates per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--action-dims", type=int, nargs="+", default=[6, 38])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = [
        time_updates(device, precision, action_dim, args.batch_size, args.warmup, args.updates)
        for action_dim in args.action_dims
        for precision in args.precisions
    ]
    report = {
        "benchmark": "drqv2_update",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "obs_shape": [9, 84, 84],
        "warmup": args.warmup,
        "updates": args.updates,
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
