"""EDM (Karras et al. 2022, arXiv 2206.00364) for flat vectors: preconditioning, training loss and samplers.

As conglu1997/SynthER @e6835a5 `synther/diffusion/elucidated_diffusion.py`: the Karras sigma schedule and the
preconditioning formulas come from `diffusers.EDMEulerScheduler` (with sigma_data = 1); the stochastic Heun
sampler (EDM Algorithm 2) is written here because diffusers has no Heun-with-churn scheduler (its
`EDMEulerScheduler.step` is first order and evaluates the model before adding churn noise).
`EDMDPMSolverMultistepScheduler` is offered as a faster, non-paper sampler.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from common.buffers.diffusion.config import DiffusionConfig
from common.precision import autocast


class EDM:
    """EDM preconditioning, loss and samplers for a network ``F(c_in x, c_noise)``.

    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise): c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2),
    c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4 (Karras et al. Table 1; diffusers `precondition_*`).
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        from diffusers import EDMEulerScheduler

        self.cfg = cfg
        # Only for the Karras sigmas and the preconditioning helpers; sigma_data set (its default is 0.5).
        self.scheduler: Any = EDMEulerScheduler(
            sigma_min=cfg.sigma_min,
            sigma_max=cfg.sigma_max,
            sigma_data=cfg.sigma_data,
            rho=cfg.rho,
            sigma_schedule="karras",
            prediction_type="epsilon",  # diffusers' epsilon output preconditioning: EDM's F
            final_sigmas_type="zero",
        )

    def denoise(self, net: nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) for x (B, D) and sigma (B, 1), computed in fp32 around the network."""
        s = self.scheduler
        out = net(s.precondition_inputs(x, sigma), s.precondition_noise(sigma))
        return s.precondition_outputs(x, out.float(), sigma)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (EDM Table 1)."""
        sd = self.cfg.sigma_data
        return (sigma**2 + sd**2) / (sigma * sd) ** 2

    def training_loss(self, net: nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        """E[lambda(sigma) ||D(x + sigma n; sigma) - x||^2 / D], ln sigma ~ N(P_mean, P_std^2)."""
        sigma = (self.cfg.p_mean + self.cfg.p_std * torch.randn(len(x), 1, device=x.device)).exp()
        noised = x + sigma * torch.randn_like(x)
        with autocast(x.device, precision):
            denoised = self.denoise(net, noised, sigma)
        per_sample = (denoised.float() - x).pow(2).mean(dim=1, keepdim=True)
        return (per_sample * self.loss_weight(sigma)).mean()

    def sigmas(self, steps: int) -> torch.Tensor:
        """Karras schedule: `steps` sigmas from sigma_max down to sigma_min, then 0 (steps + 1 values)."""
        self.scheduler.set_timesteps(steps)
        return self.scheduler.sigmas.clone().float()

    @torch.no_grad()
    def sample_heun(
        self, net: nn.Module, n: int, dim: int, device: torch.device, precision: str = "fp32"
    ) -> torch.Tensor:
        """EDM Algorithm 2: stochastic Heun with churn; the last step (to sigma = 0) is Euler only."""
        c = self.cfg
        sigmas = self.sigmas(c.sample_steps).tolist()
        gamma_max = min(c.s_churn / c.sample_steps, math.sqrt(2.0) - 1.0)  # 80/128 -> sqrt(2)-1 = 0.414
        ones = torch.ones(n, 1, device=device)

        def d(x: torch.Tensor, sigma: float) -> torch.Tensor:
            with autocast(device, precision):
                return self.denoise(net, x, ones * sigma).float()

        x = sigmas[0] * torch.randn(n, dim, device=device)  # x_0 = sigma_max * N(0, I)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
            gamma = gamma_max if c.s_tmin <= sigma <= c.s_tmax else 0.0
            sigma_hat = sigma * (1.0 + gamma)
            if gamma > 0:  # churn: raise the noise level from sigma to sigma_hat before the model sees x
                x = x + math.sqrt(sigma_hat**2 - sigma**2) * c.s_noise * torch.randn_like(x)
            slope = (x - d(x, sigma_hat)) / sigma_hat
            x_next = x + (sigma_next - sigma_hat) * slope  # Euler step
            if sigma_next > 0:  # Heun correction
                slope_next = (x_next - d(x_next, sigma_next)) / sigma_next
                x_next = x + (sigma_next - sigma_hat) * 0.5 * (slope + slope_next)
            x = x_next
        return x

    @torch.no_grad()
    def sample_dpm(
        self, net: nn.Module, n: int, dim: int, device: torch.device, precision: str = "fp32"
    ) -> torch.Tensor:
        """Deterministic DPM-Solver++ (2M) via diffusers `EDMDPMSolverMultistepScheduler`: not the paper's."""
        from diffusers import EDMDPMSolverMultistepScheduler

        c = self.cfg
        sched: Any = EDMDPMSolverMultistepScheduler(
            sigma_min=c.sigma_min,
            sigma_max=c.sigma_max,
            sigma_data=c.sigma_data,
            rho=c.rho,
            solver_order=2,
            algorithm_type="dpmsolver++",
            prediction_type="epsilon",
            final_sigmas_type="zero",
        )
        sched.set_timesteps(c.sample_steps)
        x = float(sched.sigmas[0]) * torch.randn(n, dim, device=device)
        for t in sched.timesteps:
            model_in = sched.scale_model_input(x, t)  # c_in * x (sets the step index on the first call)
            sigma = torch.full((n, 1), float(sched.sigmas[sched.step_index]), device=device)
            with autocast(device, precision):
                out = net(model_in, sched.precondition_noise(sigma)).float()
            x = sched.step(out, t, x).prev_sample
        return x
