"""Every hyperparameter of the SynthER upsampler (`DiffusionConfig`) and the transition dict it works on.

Transitions are dicts of arrays named as `common.offline.data.OfflineData` (`KEYS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import ConfigError

Transitions = dict[str, np.ndarray]
KEYS = ("observations", "actions", "rewards", "next_observations", "terminations")
SAMPLERS = ("heun", "dpm")


@dataclass(frozen=True)
class DiffusionConfig:
    """Every upsampler hyperparameter; the defaults are SynthER's (source in each comment)."""

    # Denoiser (SynthER resmlp_denoiser.gin: width 2048 offline; online sac_synther_dmc.gin: 1024, dim_t 256)
    width: int = 1024
    num_blocks: int = 6
    dim_t: int = 128
    fourier_dim: int = 16  # lucidrains RandomOrLearnedSinusoidalPosEmb(learned_sinusoidal_dim=16)
    activation: str = "relu"
    layer_norm: bool = False  # gin: layer_norm = False
    # EDM (elucidated_diffusion.py defaults; Karras et al. Table 1)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 1.0  # standardised data (EDM's image value is 0.5)
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    # Training (SynthER diffusion/train_diffuser.py `Trainer` defaults and gin)
    train_steps: int = 100_000
    batch_size: int = 256
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995  # ema_pytorch.EMA(beta=0.995, update_every=10)
    ema_every: int = 10
    ema_after: int = 100  # ema_pytorch defaults: copy the weights for the first 100 calls ...
    ema_power: float = 2.0 / 3.0  # ... then decay 1 - (1 + t)^-power, capped at ema_decay
    # Sampling (elucidated_diffusion.py `sample`, num_sample_steps=128 in SynthER's gin)
    sampler: str = (
        "heun"  # heun = the paper's; dpm = EDMDPMSolverMultistepScheduler (faster, not the paper's)
    )
    sample_steps: int = 128
    s_churn: float = 80.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    sample_batch_size: int = 10_000  # chunking only (SynthER: 100k per chunk on GPU); no effect on results
    # Data model (SynthER diffusion/utils.py, norm.py)
    skip_reward_norm: bool = False  # True online on DMC (`skip_reward_norm=True`), False on Gym
    model_terminals: str = "auto"  # auto: a done dim iff the data holds a terminal; true / false to force
    terminal_threshold: float = 0.5  # `terminal_threshold=0.5` (resmlp_denoiser.gin)
    clip_actions: bool = True  # DEVIATION: SynthER never clips synthetic actions; we clip to [-1, 1]

    @classmethod
    def from_mapping(cls, values: Any) -> DiffusionConfig:
        """Build from a config section; unknown keys and bad values fail with a one-line ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = dict(values)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown diffusion setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        checks = [
            (self.width >= 1 and self.num_blocks >= 0 and self.dim_t >= 1, "width, dim_t must be >= 1"),
            (self.train_steps >= 1, f"train_steps={self.train_steps} must be >= 1"),
            (self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1"),
            (self.sampler in SAMPLERS, f"sampler={self.sampler!r} must be one of {', '.join(SAMPLERS)}"),
            (self.sample_steps >= 2, f"sample_steps={self.sample_steps} must be >= 2"),
            (0 < self.sigma_min < self.sigma_max, "need 0 < sigma_min < sigma_max"),
            (
                self.model_terminals in ("auto", "true", "false"),
                "model_terminals must be auto, true or false",
            ),
            (self.sample_batch_size >= 1, "sample_batch_size must be >= 1"),
            (self.ema_every >= 1, "ema_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synther diffusion: {message}")
