"""DQN update throughput: updates/s at batch 32 for the MinAtar and the Atari (Nature CNN) network sizes.

Run from the repository root:

    python bench/bench_dqn.py --threads 1 --updates 200

Prints one JSON object. Each (network, loss) pair gets a fresh agent with the paper sizes of
conf/paper/dqn.yaml (MinAtar: conv 16 3x3 + 128 hidden on 4x10x10 0/1 channels) or
conf/paper_env/dqn_atari.yaml (Nature CNN + 512 hidden on 4x84x84 uint8 frames), 6 actions, `--warmup`
untimed updates, then `--updates` timed ones on one fixed random batch. The timing includes the host-to-device
batch copy, as in training (sampling from the replay is not included: bench/bench_replay.py measures it).
`cpu_s_per_update` (process CPU time) helps to read figures from a shared host.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs.discrete import DiscreteEnvSpec
from common.runtime import cpu_name
from papers.dqn.agent import DQNAgent

SIZES = {  # network -> (obs shape, high value of the observations, agent settings)
    "minatar": ((4, 10, 10), 2, {"network": "minatar", "hidden_dim": 128}),
    "nature": ((4, 84, 84), 256, {"network": "nature", "hidden_dim": 512}),
}
AGENT = {
    "hidden_layers": 1,
    "channel_scale": 1,
    "huber_delta": 1.0,
    "v_min": -100.0,
    "v_max": 100.0,
    "num_bins": 51,
    "sigma_ratio": 0.75,
    "double_q": False,
    "target_update_every": 1000,
    "optimizer": "rmsprop",
    "lr": 0.00025,
    "rmsprop_alpha": 0.95,
    "optim_eps": 0.01,
    "rmsprop_centered": True,
    "rmsprop_momentum": 0.0,
    "max_grad_norm": None,
    "epsilon_start": 1.0,
    "epsilon_end": 0.1,
    "epsilon_decay_steps": 100000,
    "epsilon_warmup_steps": 5000,
    "epsilon_eval": 0.0,
    "target_noise_std": 0.0,
}


def time_updates(
    device: torch.device, network: str, loss: str, batch_size: int, warmup: int, updates: int
) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    shape, high, sizes = SIZES[network]
    spec = DiscreteEnvSpec(shape, np.dtype(np.uint8), shape, 1, (), 1, 1000, network == "nature", 6)
    agent = DQNAgent(OmegaConf.create({**AGENT, **sizes, "loss": loss}), spec, device, "fp32")
    rng = np.random.default_rng(0)
    batch = Batch(
        obs=rng.integers(0, high, (batch_size, *shape), dtype=np.uint8),
        action=rng.integers(0, 6, batch_size).astype(np.float32),
        reward=rng.uniform(0, 1, (batch_size, 1)).astype(np.float32),
        discount=np.full((batch_size, 1), 0.99, dtype=np.float32),
        next_obs=rng.integers(0, high, (batch_size, *shape), dtype=np.uint8),
    )
    for step in range(warmup):
        agent.update(batch, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(updates):
        agent.update(batch, step)  # returns python floats: each update ends with a device sync
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "network": network,
        "loss": loss,
        "parameters": sum(p.numel() for p in agent.q.parameters()),
        "updates_per_s": round(updates / elapsed, 1),
        "ms_per_update": round(1000 * elapsed / updates, 2),
        "cpu_ms_per_update": round(1000 * cpu / updates, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all)")
    parser.add_argument("--updates", type=int, default=200, help="timed updates per configuration")
    parser.add_argument("--warmup", type=int, default=10, help="untimed updates first")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--networks", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--losses", nargs="+", default=["huber", "hl_gauss", "c51"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = [
        time_updates(device, network, loss, args.batch_size, args.warmup, args.updates)
        for network in args.networks
        for loss in args.losses
    ]
    report = {
        "benchmark": "dqn_update",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "updates": args.updates,
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
