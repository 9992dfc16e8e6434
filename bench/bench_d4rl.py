"""D4RL pipeline figures: SAC updates/s at batch 256, and the offline dataset loader's throughput.

Run from the repository root:

    python bench/bench_d4rl.py --transitions 1000000 --updates 300

Prints one JSON object:
- `sac`: updates/s of `papers/sac` (conf/paper/sac.yaml) on random Hopper-sized batches (obs 11, act 3),
  batch 256, after 20 untimed updates;
- `minari`: writing and loading a `--transitions` Hopper-sized dataset of 1000-step episodes through
  `common.offline.minari_io` (Minari 0.5.4 HDF5), in transitions/s, and its size on disk;
- `sampler`: `OfflineSampler` batches of 256 per second (what the offline loop draws per update).
Datasets go to a temporary MINARI_DATASETS_PATH that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.offline.data import OfflineData, OfflineSampler
from common.registry import CONF_DIR
from common.runtime import cpu_name, cpu_pressure

OBS, ACT, BATCH = 11, 3, 256


def sac_updates(updates: int) -> dict[str, float]:
    from papers.sac.agent import SACAgent

    torch.manual_seed(0)
    spec = EnvSpec((OBS,), np.dtype(np.float32), (OBS,), 1, (ACT,), 1, 1000, False)
    cfg = OmegaConf.load(CONF_DIR / "paper" / "sac.yaml").agent
    cfg.num_expl_steps = 0
    agent = SACAgent(cfg, spec, torch.device("cpu"), "fp32")
    rng = np.random.default_rng(0)

    def batch() -> Batch:
        return Batch(
            obs=rng.normal(size=(BATCH, OBS)).astype(np.float32),
            action=rng.uniform(-1, 1, (BATCH, ACT)).astype(np.float32),
            reward=rng.normal(size=(BATCH, 1)).astype(np.float32),
            discount=np.full((BATCH, 1), 0.99, np.float32),
            next_obs=rng.normal(size=(BATCH, OBS)).astype(np.float32),
        )

    batches = [batch() for _ in range(32)]
    for i in range(20):
        agent.update(batches[i % 32], i)
    start = time.perf_counter()
    for i in range(updates):
        agent.update(batches[i % 32], i)
    return {
        "batch": BATCH,
        "updates": updates,
        "updates_per_s": round(updates / (time.perf_counter() - start), 1),
    }


def toy_dataset(n: int) -> OfflineData:
    from common.offline.minari_io import episode_starts

    rng = np.random.default_rng(0)
    states = rng.normal(size=(n + 1, OBS)).astype(np.float32)
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    trunc[999::1000] = True
    return OfflineData(
        observations=states[:-1],
        actions=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=states[1:],
        terminations=term,
        truncations=trunc,
        episode_starts=episode_starts(term, trunc),
        metadata={"ref_min_score": 0.0, "ref_max_score": 1.0},
    )


def minari_io(n: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-minari-"))
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        from common.offline.minari_io import dataset_dir, load_dataset, write_dataset

        data = toy_dataset(n)
        start = time.perf_counter()
        write_dataset("bench", "medium", data, {})
        write_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in dataset_dir("bench", "medium").rglob("*") if f.is_file())
        start = time.perf_counter()
        loaded = load_dataset("bench", "medium")
        load_s = time.perf_counter() - start
        assert len(loaded) == n
        sampler = OfflineSampler(loaded, 0.99, seed=0)
        start = time.perf_counter()
        draws = 2000
        for _ in range(draws):
            sampler.sample(BATCH)
        sample_s = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "transitions": n,
        "write_transitions_per_s": round(n / write_s),
        "load_transitions_per_s": round(n / load_s),
        "load_s": round(load_s, 2),
        "bytes_per_transition_on_disk": round(size / n, 1),
        "sampler_batches_per_s": round(draws / sample_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {
        "cpu": cpu_name(),
        "cpu_pressure": cpu_pressure(),
        "threads": args.threads,
        "sac": sac_updates(args.updates),
        "minari": minari_io(args.transitions),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
