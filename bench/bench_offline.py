"""Offline agents' update throughput: TD3+BC and IQL updates/s at batch 256 on Hopper-sized data.

Run from the repository root:

    python bench/bench_offline.py --threads 1 --updates 300

Prints one JSON object. Each (paper, precision) pair gets a fresh agent built from the paper's own config
(`conf/paper/<p>.yaml`, composed with env=hopper: obs 11, actions 3, 256x256 networks), `prepare`d on a
random dataset of `--transitions` rows, then `--warmup` untimed and `--updates` timed updates. Each update
samples its batch from `common.offline.data.OfflineSampler`, as `train_offline` does. Wall time is what
counts; `cpu_ms_per_update` (process CPU time) helps to read figures from a shared host.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from common.envs.base import EnvSpec
from common.offline.data import OfflineData, OfflineSampler
from common.registry import CONF_DIR, import_entry
from common.runtime import cpu_name

OBS_DIM, ACTION_DIM = 11, 3  # Gymnasium Hopper-v5


def random_dataset(n: int, seed: int = 0, episode_length: int = 1000) -> OfflineData:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, OBS_DIM)).astype(np.float32)
    starts = np.arange(0, n, episode_length, dtype=np.int64)
    terminations = np.zeros(n, bool)
    terminations[np.append(starts[1:], n) - 1] = True
    return OfflineData(
        observations=obs[:-1],
        actions=rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs[1:],
        terminations=terminations,
        truncations=np.zeros(n, bool),
        episode_starts=starts,
    )


def time_updates(
    paper: str,
    data: OfflineData,
    device: torch.device,
    precision: str,
    batch_size: int,
    warmup: int,
    updates: int,
) -> dict[str, float | int | str]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paper={paper}", "env=hopper", "dataset=medium"])
    spec = EnvSpec((OBS_DIM,), np.dtype(np.float32), (OBS_DIM,), 1, (ACTION_DIM,), 1, 1000, False)
    torch.manual_seed(0)
    agent = import_entry(cfg.paper.entry)(cfg.paper.agent, spec, device, precision)
    agent.prepare(data)
    sampler = OfflineSampler(data, cfg.paper.buffer.discount, seed=0)
    for step in range(warmup):
        agent.update(sampler.sample(batch_size), step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(warmup, warmup + updates):
        agent.update(sampler.sample(batch_size), step)  # returns python floats: a device sync per update
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "paper": paper,
        "precision": precision,
        "updates_per_s": round(updates / elapsed, 1),
        "ms_per_update": round(1000 * elapsed / updates, 2),
        "cpu_ms_per_update": round(1000 * cpu / updates, 2),
        # at this rate, the papers' 1M-update budget takes this many hours
        "hours_per_1m_updates": round(1e6 * elapsed / updates / 3600, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    parser.add_argument("--updates", type=int, default=300, help="timed updates per configuration")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--transitions", type=int, default=100_000, help="rows of the random dataset")
    parser.add_argument("--papers", nargs="+", default=["td3bc", "iql", "bc"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = random_dataset(args.transitions)
    results = [
        time_updates(paper, data, device, precision, args.batch_size, args.warmup, args.updates)
        for paper in args.papers
        for precision in args.precisions
    ]
    report = {
        "benchmark": "offline_update",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "obs_dim": OBS_DIM,
        "action_dim": ACTION_DIM,
        "transitions": args.transitions,
        "warmup": args.warmup,
        "updates": args.updates,
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
