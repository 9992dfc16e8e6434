"""Speed and sample quality of the SynthER diffusion upsampler; prints one JSON object.

    python bench/bench_diffusion.py [--width 1024] [--blocks 6] [--dim-t 256] [--dim 41] [--batch 256]
                                    [--train-iters 20] [--sample-n 1000] [--quick]

1. Denoiser training steps/s (EDM loss, AdamW, clip, EMA) at the given size, fp32 and bf16 autocast; the
   default is the online preset on a 41-dim transition (HalfCheetah/Walker: 2*17 + 6 + 1).
2. Generated transitions/s at that size: Heun-128 (the paper's sampler, 255 network evaluations) and
   DPM-Solver++ 2M at 20 and 40 steps, fp32 and bf16.
3. Sample quality per sampler with the exact denoiser of a known 2-D Gaussian (error of the std, which
   discretisation inflates) and with a small model fitted on a bimodal toy set (quality_report).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common.buffers.diffusion import EDM, DiffusionConfig, TransitionUpsampler, quality_report  # noqa: E402
from common.networks.denoiser import ResidualMLPDenoiser  # noqa: E402

SAMPLERS = (("heun", 128), ("dpm", 20), ("dpm", 40))


def train_speed(cfg: DiffusionConfig, dim: int, batch: int, iters: int, precision: str) -> float:
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(dim, cfg.width, cfg.num_blocks, cfg.dim_t)
    edm, opt = EDM(cfg), torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.99))
    x = torch.randn(batch, dim)

    def step() -> None:
        loss = edm.training_loss(net, x, precision)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return iters / (time.perf_counter() - start)


def sample_speed(cfg: DiffusionConfig, dim: int, n: int, sampler: str, steps: int, precision: str) -> float:
    torch.manual_seed(0)
    net = ResidualMLPDenoiser(dim, cfg.width, cfg.num_blocks, cfg.dim_t).eval()
    edm = EDM(dataclasses.replace(cfg, sample_steps=steps))
    draw = edm.sample_heun if sampler == "heun" else edm.sample_dpm
    start = time.perf_counter()
    draw(net, n, dim, torch.device("cpu"), precision)
    return n / (time.perf_counter() - start)


class GaussianOracle(torch.nn.Module):
    """The exact F of N(mean, std^2) data under EDM preconditioning with sigma_data = 1."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)

    def forward(self, x_in: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sigma = (4 * noise).exp()
        x = x_in * (sigma**2 + 1).sqrt()
        d = self.mean + self.std**2 / (self.std**2 + sigma**2) * (x - self.mean)
        return (d - x / (sigma**2 + 1)) / (sigma / (sigma**2 + 1).sqrt())


def oracle_quality(n: int) -> dict[str, dict[str, float]]:
    out = {}
    for sampler, steps in (*SAMPLERS, ("heun", 32), ("heun", 64)):
        torch.manual_seed(0)
        edm = EDM(DiffusionConfig(sample_steps=steps))
        draw = edm.sample_heun if sampler == "heun" else edm.sample_dpm
        x = draw(GaussianOracle([1.0, -2.0], [0.5, 2.0]), n, 2, torch.device("cpu"))
        rel = (x.std(0) / torch.tensor([0.5, 2.0]) - 1).abs().max().item()
        out[f"{sampler}{steps}"] = {"std_rel_error": round(rel, 4)}
    return out


def toy(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=n)
    s = 1.5 * sign[:, None] + 0.2 * rng.normal(size=(n, 3))
    a = np.clip(0.5 * sign[:, None] + 0.3 * rng.normal(size=(n, 2)), -1, 1)
    return {
        "observations": s,
        "actions": a,
        "rewards": s.sum(1) + a.sum(1),
        "next_observations": 0.9 * s + 0.1 * a.sum(1, keepdims=True),
        "terminations": np.zeros(n, bool),
    }


def fitted_quality(train_steps: int, n: int) -> dict[str, dict[str, float]]:
    cfg = DiffusionConfig(width=256, num_blocks=3, dim_t=128, train_steps=train_steps)
    real = toy(5000, 0)
    up = TransitionUpsampler(cfg, 3, 2, seed=0)
    fit = up.fit(real)
    out: dict[str, dict[str, float]] = {"fit": {"loss": round(fit.loss, 4), "seconds": round(fit.seconds, 1)}}
    for sampler, steps in SAMPLERS:
        up.cfg = dataclasses.replace(cfg, sampler=sampler, sample_steps=steps)
        up.edm = EDM(up.cfg)
        start = time.perf_counter()
        syn = up.sample(n)
        seconds = time.perf_counter() - start
        q = quality_report(real, syn, up.last_action_out_of_bounds)
        sign_agree = float(np.mean(np.sign(syn["observations"][:, 0]) == np.sign(syn["actions"][:, 0])))
        out[f"{sampler}{steps}"] = {
            "mean_abs_z": round(q["mean_abs_z"], 4),
            "std_log_ratio": round(q["std_log_ratio"], 4),
            "action_out_of_bounds": round(q["action_out_of_bounds"], 4),
            "mode_agreement": round(sign_agree, 4),
            "samples_per_s": round(n / seconds, 1),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--dim-t", type=int, default=256)
    ap.add_argument("--dim", type=int, default=41)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--train-iters", type=int, default=20)
    ap.add_argument("--sample-n", type=int, default=1000)
    ap.add_argument("--fit-steps", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script runs")
    args = ap.parse_args()
    if args.quick:
        args.width, args.blocks, args.train_iters, args.sample_n, args.fit_steps = 128, 2, 5, 200, 200
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = DiffusionConfig(width=args.width, num_blocks=args.blocks, dim_t=args.dim_t)
    params = sum(
        p.numel() for p in ResidualMLPDenoiser(args.dim, args.width, args.blocks, args.dim_t).parameters()
    )
    result: dict = {
        "config": {
            **vars(args),
            "params": params,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "train_steps_per_s": {
            p: round(train_speed(cfg, args.dim, args.batch, args.train_iters, p), 2) for p in ("fp32", "bf16")
        },
        "samples_per_s": {
            f"{s}{k}_{p}": round(sample_speed(cfg, args.dim, args.sample_n, s, k, p), 1)
            for s, k in SAMPLERS
            for p in ("fp32", "bf16")
        },
        "oracle_gaussian": oracle_quality(20000),
        "fitted_toy": fitted_quality(args.fit_steps, 5000 if not args.quick else 500),
    }
    hours = 100_000 / result["train_steps_per_s"]["fp32"] / 3600
    result["estimates"] = {
        "one_100k_step_fit_hours_fp32": round(hours, 2),
        "heun128_1M_samples_hours_fp32": round(1e6 / result["samples_per_s"]["heun128_fp32"] / 3600, 2),
        "note": "on this machine's CPU threads; the paper's sizes are meant for a GPU",
    }
    assert math.isfinite(hours)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
