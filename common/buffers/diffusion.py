"""A diffusion upsampler of transitions (SynthER, Lu et al. 2023, arXiv 2303.06614) and its mixed replay.

The model is unconditional over one flat vector per transition, ``x = [s, a, r, s', done]`` (done only when
modelled), standardised per dimension. It is trained with EDM (Karras et al. 2022, arXiv 2206.00364) and
sampled with EDM's stochastic Heun sampler (Algorithm 2), as conglu1997/SynthER @e6835a5
`synther/diffusion/elucidated_diffusion.py`; the Karras sigma schedule and the preconditioning formulas come
from `diffusers.EDMEulerScheduler` (with sigma_data = 1), the sampler loop is written here because diffusers
has no Heun-with-churn scheduler (its `EDMEulerScheduler.step` is first order and evaluates the model before
adding churn noise). `EDMDPMSolverMultistepScheduler` is offered as a faster, non-paper sampler.

Public API: `DiffusionConfig` (every hyperparameter, paper defaults), `TransitionUpsampler` with
``fit(transitions)`` / ``sample(n)``, `SyntheticBuffer` + `MixedReplay` (a fraction of each batch synthetic),
`quality_report` and `MujocoDynamicsCheck` (how good the samples are). Transitions are dicts of arrays
named as `common.offline.data.OfflineData`: observations, actions, rewards, next_observations, terminations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from common.buffers.base import Batch
from common.errors import CheckpointError, ConfigError
from common.networks.denoiser import ResidualMLPDenoiser
from common.precision import autocast, check_precision

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


# ------------------------------------------------------------------------------------------ data model


@dataclass(frozen=True)
class TransitionLayout:
    """Where each part of a transition sits in the flat vector ``[s, a, r, s', (done)]``."""

    obs_dim: int
    action_dim: int
    terminals: bool

    @property
    def dim(self) -> int:
        return 2 * self.obs_dim + self.action_dim + 1 + int(self.terminals)

    @property
    def reward_index(self) -> int:
        return self.obs_dim + self.action_dim

    def flatten(self, t: Transitions) -> np.ndarray:
        parts = [
            np.asarray(t["observations"], np.float32).reshape(-1, self.obs_dim),
            np.asarray(t["actions"], np.float32).reshape(-1, self.action_dim),
            np.asarray(t["rewards"], np.float32).reshape(-1, 1),
            np.asarray(t["next_observations"], np.float32).reshape(-1, self.obs_dim),
        ]
        if self.terminals:
            parts.append(np.asarray(t["terminations"], np.float32).reshape(-1, 1))
        return np.concatenate(parts, axis=1)

    def split(self, x: np.ndarray) -> Transitions:
        """Inverse of `flatten`; `terminations` holds the raw (float) done dim, zeros when not modelled."""
        o, a = self.obs_dim, self.action_dim
        return {
            "observations": x[:, :o],
            "actions": x[:, o : o + a],
            "rewards": x[:, o + a],
            "next_observations": x[:, o + a + 1 : 2 * o + a + 1],
            "terminations": x[:, -1] if self.terminals else np.zeros(len(x), np.float32),
        }


class StandardNormalizer:
    """Per-dimension ``(x - mean) / (std + 1e-5)``; `skip_dims` pass through unchanged (mean 0, scale 1).

    SynthER `diffusion/norm.py` ('standard'); the done dim is always skipped (`disable_terminal_norm`).
    """

    EPS = 1e-5

    def __init__(self, x: np.ndarray, skip_dims: tuple[int, ...] = ()) -> None:
        x = np.asarray(x, np.float64)
        self.mean = x.mean(axis=0).astype(np.float32)
        self.scale = (x.std(axis=0) + self.EPS).astype(np.float32)
        skip = list(skip_dims)
        self.mean[skip], self.scale[skip] = 0.0, 1.0
        self.skip_dims = tuple(int(d) for d in skip_dims)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.mean).astype(np.float32)


# ----------------------------------------------------------------------------------------------- EDM


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


# --------------------------------------------------------------------------------------------- EMA


class EMA:
    """An EMA copy of a network with ema_pytorch's default warm-up (update_after_step=100, inv_gamma=1,
    power=2/3): for the first `after` calls the copy tracks the weights; then every `every`-th call blends
    with decay min(beta, 1 - (1 + t)^-power), t = calls - after - 1."""

    def __init__(self, net: nn.Module, beta: float, every: int, after: int, power: float) -> None:
        import copy

        self.model = copy.deepcopy(net).requires_grad_(False)
        self.beta, self.every, self.after, self.power = beta, every, after, power
        self.calls = 0

    def decay(self) -> float:
        t = self.calls - self.after - 1
        if t <= 0:
            return 0.0
        return min(self.beta, 1.0 - (1.0 + t) ** -self.power)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.calls += 1
        if self.calls <= self.after:
            self.model.load_state_dict(net.state_dict())
            return
        if self.calls % self.every:
            return
        decay = self.decay()
        for ema_p, p in zip(self.model.parameters(), net.parameters(), strict=True):
            ema_p.lerp_(p, 1.0 - decay)


# ------------------------------------------------------------------------------------------ upsampler


@dataclass
class FitResult:
    loss: float
    steps: int
    seconds: float
    transitions: int
    extra: dict[str, float] = field(default_factory=dict)


def _bar(total: int, desc: str, unit: str) -> Any:
    """A progress bar for fits and draws (minutes at paper sizes); transient, so the run's bar stays."""
    import sys

    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )


class TransitionUpsampler:
    """Fit a diffusion model to transitions and sample new ones (SynthER's upsampler).

    ``fit(transitions)`` trains a fresh denoiser from scratch (as SynthER does at every retrain) and refits
    the normaliser; ``sample(n)`` draws n transitions from the EMA weights, unnormalised, with terminals
    thresholded and (by default) actions clipped to [-1, 1]. `last_action_out_of_bounds` is the fraction of
    sampled action entries outside [-1, 1] before clipping.
    """

    def __init__(
        self,
        cfg: DiffusionConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        seed: int = 0,
    ) -> None:
        self.cfg = cfg
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.seed = int(seed)
        self.edm = EDM(cfg)
        self.layout: TransitionLayout | None = None
        self.normalizer: StandardNormalizer | None = None
        self.net: ResidualMLPDenoiser | None = None
        self.ema: EMA | None = None
        self.fits = 0  # fits so far, and draws since the last fit: they pick each one's random stream
        self.draws = 0
        self.last_action_out_of_bounds = float("nan")

    @property
    def fitted(self) -> bool:
        return self.ema is not None

    def _build(self, layout: TransitionLayout) -> None:
        c = self.cfg
        self.layout = layout
        self.net = ResidualMLPDenoiser(
            layout.dim, c.width, c.num_blocks, c.dim_t, c.fourier_dim, c.activation, c.layer_norm
        ).to(self.device)
        self.ema = EMA(self.net, c.ema_decay, c.ema_every, c.ema_after, c.ema_power)

    def _layout_for(self, t: Transitions) -> TransitionLayout:
        mode = self.cfg.model_terminals
        terminals = mode == "true" or (mode == "auto" and bool(np.any(t["terminations"])))
        return TransitionLayout(self.obs_dim, self.action_dim, terminals)

    def fit(self, transitions: Transitions, steps: int | None = None) -> FitResult:
        """Train a new model on `transitions` (dict of arrays, see module docstring) for `steps` updates."""
        c = self.cfg
        steps = c.train_steps if steps is None else int(steps)
        n = len(transitions["rewards"])
        if n < 2:
            raise ConfigError(f"the upsampler needs at least 2 transitions to fit, got {n}")
        layout = self._layout_for(transitions)
        x = layout.flatten(transitions)
        skip = [layout.dim - 1] if layout.terminals else []  # done is never normalised
        if c.skip_reward_norm:
            skip.append(layout.reward_index)
        self.normalizer = StandardNormalizer(x, tuple(skip))
        with self._own_rng(2 * self.fits):
            return self._train(layout, x, steps)

    @contextlib.contextmanager
    def _own_rng(self, stream: int) -> Iterator[None]:
        """Seed torch from (seed, stream) for one fit or draw, and restore the global RNG afterwards: the
        agent's random stream is the same with or without the upsampler, and each fit is reproducible."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + stream)
            yield

    def _train(self, layout: TransitionLayout, x: np.ndarray, steps: int) -> FitResult:
        c, n = self.cfg, len(x)
        assert self.normalizer is not None
        self._build(layout)
        assert self.net is not None and self.ema is not None
        data = torch.as_tensor(self.normalizer.normalize(x), device=self.device)
        # AdamW(lr 3e-4, betas (0.9, 0.99), wd 0) with cosine decay to 0, grad-norm clip 1 (SynthER Trainer).
        opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        batch = min(c.batch_size, n)
        start, losses = time.perf_counter(), []
        perm, pos = torch.randperm(n, device=self.device), 0
        self.net.train()
        bar = _bar(steps, "upsampler fit", "step")
        for i in range(steps):
            if pos + batch > n:  # epochs without replacement, like SynthER's shuffled DataLoader
                perm, pos = torch.randperm(n, device=self.device), 0
            loss = self.edm.training_loss(self.net, data[perm[pos : pos + batch]], self.precision)
            pos += batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), c.grad_clip)
            opt.step()
            sched.step()
            self.ema.update(self.net)
            losses.append(loss.detach())
            bar.update(1)
            if i % 100 == 99:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
        self.fits, self.draws = self.fits + 1, 0
        tail = torch.stack(losses[-max(1, steps // 10) :]).mean().item()  # last 10% of steps
        return FitResult(loss=tail, steps=steps, seconds=time.perf_counter() - start, transitions=n)

    @torch.no_grad()
    def sample_normalized(self, n: int) -> np.ndarray:
        """n raw model samples in normalised units (no post-processing)."""
        if not self.fitted:
            raise RuntimeError("TransitionUpsampler.sample() before fit()")
        assert self.ema is not None and self.layout is not None
        net = self.ema.model.eval()
        draw = self.edm.sample_heun if self.cfg.sampler == "heun" else self.edm.sample_dpm
        chunks = []
        self.draws += 1
        bar = _bar(n, f"upsampler sample ({self.cfg.sampler})", "transition")
        with self._own_rng(2 * self.fits + 1 + 7919 * self.draws):
            for start in range(0, n, self.cfg.sample_batch_size):
                m = min(self.cfg.sample_batch_size, n - start)
                chunks.append(draw(net, m, self.layout.dim, self.device, self.precision).cpu().numpy())
                bar.update(m)
        bar.close()
        return np.concatenate(chunks) if chunks else np.zeros((0, self.layout.dim), np.float32)

    def sample(self, n: int) -> Transitions:
        """n synthetic transitions: terminals thresholded (bool), actions clipped unless disabled."""
        assert self.normalizer is not None and self.layout is not None
        raw = self.layout.split(self.normalizer.unnormalize(self.sample_normalized(n)))
        return self.postprocess(raw)

    def postprocess(self, raw: Transitions) -> Transitions:
        """Threshold terminals at `terminal_threshold`; clip actions to [-1, 1] (DEVIATION, see config)."""
        out = dict(raw)
        actions = np.asarray(raw["actions"], np.float32)
        self.last_action_out_of_bounds = float(np.mean(np.abs(actions) > 1.0)) if actions.size else 0.0
        if self.cfg.clip_actions:
            out["actions"] = np.clip(actions, -1.0, 1.0)
        out["terminations"] = np.asarray(raw["terminations"]) > self.cfg.terminal_threshold
        return out

    # ------------------------------------------------------------------------------------ checkpoint

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and lists only (weights_only-loadable): the EMA weights and the normaliser."""
        if not self.fitted:
            return {"fitted": False, "fits": self.fits, "draws": self.draws}
        assert self.ema is not None and self.normalizer is not None and self.layout is not None
        return {
            "fitted": True,
            "fits": self.fits,
            "draws": self.draws,
            "terminals": self.layout.terminals,
            "ema": self.ema.model.state_dict(),
            "mean": torch.from_numpy(self.normalizer.mean),
            "scale": torch.from_numpy(self.normalizer.scale),
            "skip_dims": list(self.normalizer.skip_dims),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the sampler (EMA weights + normaliser); a resume samples as the saved run would have."""
        self.fits, self.draws = int(state["fits"]), int(state["draws"])
        if not state["fitted"]:
            return
        self._build(TransitionLayout(self.obs_dim, self.action_dim, bool(state["terminals"])))
        assert self.ema is not None
        try:
            self.ema.model.load_state_dict(state["ema"])
        except RuntimeError as e:
            raise CheckpointError(
                f"saved upsampler does not fit this config: {str(e).splitlines()[0]}"
            ) from e
        norm = StandardNormalizer.__new__(StandardNormalizer)
        norm.mean, norm.scale = state["mean"].numpy(), state["scale"].numpy()
        norm.skip_dims = tuple(state["skip_dims"])
        self.normalizer = norm


# --------------------------------------------------------------------------------------- replay mixing


class SyntheticBuffer:
    """A fixed set of synthetic one-step transitions, replaced wholesale at each refresh (SynthER wipes
    and refills its diffusion buffer after every retrain)."""

    def __init__(self, discount: float, seed: int) -> None:
        self.discount = float(discount)
        self.rng = np.random.default_rng(seed)
        self.data: Transitions | None = None

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data["rewards"])

    def refill(self, transitions: Transitions) -> None:
        self.data = {k: np.ascontiguousarray(transitions[k], np.float32) for k in KEYS}

    def sample(self, batch_size: int) -> Batch:
        assert self.data is not None, "SyntheticBuffer.sample() before refill()"
        d = self.data
        idx = self.rng.integers(0, len(self), size=batch_size)
        return Batch(
            obs=d["observations"][idx],
            action=d["actions"][idx],
            reward=d["rewards"][idx, None],
            discount=(self.discount * (1.0 - d["terminations"][idx]))[:, None].astype(np.float32),
            next_obs=d["next_observations"][idx],
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.data is not None:
            for k in KEYS:
                np.save(directory / f"{k}.npy", self.data[k], allow_pickle=False)
        (directory / "rng.json").write_text(json.dumps(self.rng.bit_generator.state))

    def load(self, directory: Path) -> None:
        try:
            self.rng.bit_generator.state = json.loads((directory / "rng.json").read_text())
            present = [(directory / f"{k}.npy").exists() for k in KEYS]
            self.data = {k: np.load(directory / f"{k}.npy") for k in KEYS} if all(present) else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"saved synthetic buffer at {directory} is unreadable ({e}); delete it"
            ) from e


def concat_batches(a: Batch, b: Batch) -> Batch:
    return Batch(
        *(
            np.concatenate([getattr(a, k), getattr(b, k)])
            for k in ("obs", "action", "reward", "discount", "next_obs")
        )
    )


class MixedReplay:
    """Batches of which ``round(fraction * B)`` rows come from `synthetic` and the rest from `real` (any
    object with ``sample(n) -> Batch``). All rows are real while the synthetic buffer is empty (SynthER
    `diffusion_sample_ratio=0.5`: 128 real + 128 synthetic of 256)."""

    def __init__(self, real: Any, synthetic: SyntheticBuffer, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"synthetic fraction {fraction} must be in [0, 1]")
        self.real, self.synthetic, self.fraction = real, synthetic, float(fraction)

    def synthetic_rows(self, batch_size: int) -> int:
        return int(round(self.fraction * batch_size)) if len(self.synthetic) > 0 else 0

    def sample(self, batch_size: int) -> Batch:
        k = self.synthetic_rows(batch_size)
        if k == 0:
            return self.real.sample(batch_size)
        if k == batch_size:
            return self.synthetic.sample(batch_size)
        return concat_batches(self.real.sample(batch_size - k), self.synthetic.sample(k))


# ------------------------------------------------------------------------------------------- quality


def quality_report(real: Transitions, synthetic: Transitions, action_out_of_bounds: float) -> dict[str, Any]:
    """How synthetic data compares with real data, per dimension of ``[s, a, r, s']``.

    Returns scalars (`mean_abs_z`: mean over dims of |mean_syn - mean_real| / std_real; `std_log_ratio`: mean
    over dims of |ln(std_syn / std_real)|; `action_out_of_bounds`; `terminal_rate` real and synthetic) and
    the per-dimension lists under `per_dim`.
    """
    layout = TransitionLayout(real["observations"].shape[1], real["actions"].shape[1], False)
    xr, xs = layout.flatten(real).astype(np.float64), layout.flatten(synthetic).astype(np.float64)
    mr, sr, ms, ss = xr.mean(0), xr.std(0) + 1e-8, xs.mean(0), xs.std(0) + 1e-8
    return {
        "mean_abs_z": float(np.mean(np.abs(ms - mr) / sr)),
        "std_log_ratio": float(np.mean(np.abs(np.log(ss / sr)))),
        "action_out_of_bounds": float(action_out_of_bounds),
        "terminal_rate_real": float(np.mean(real["terminations"])),
        "terminal_rate_synthetic": float(np.mean(synthetic["terminations"])),
        "per_dim": {
            "real_mean": mr.tolist(),
            "real_std": sr.tolist(),
            "syn_mean": ms.tolist(),
            "syn_std": ss.tolist(),
        },
    }


class MujocoDynamicsCheck:
    """Dynamics error of synthetic transitions: set the simulator to s, apply a, compare its next obs with s'.

    Supported: Gymnasium MuJoCo envs whose observation is ``[qpos[1:], qvel]`` (the full state but the
    x-position, which the dynamics do not depend on): Hopper, Walker2d, HalfCheetah (also Swimmer). Hopper and
    Walker2d clip qvel to +-10 in the observation, so states beyond that are set clipped. Others (Ant with
    contact forces, Humanoid, DMC) are skipped: `supported` is False and `error` returns None.
    """

    def __init__(self, env_id: str) -> None:
        import gymnasium as gym

        self.env = cast(Any, gym.make(env_id).unwrapped)  # a MujocoEnv when supported
        model: Any = getattr(self.env, "model", None)
        obs_dim = self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.supported = (
            model is not None
            and hasattr(self.env, "set_state")
            and getattr(self.env, "_exclude_current_positions_from_observation", False)
            and obs_dim == model.nq - 1 + model.nv
        )
        if self.supported:
            self.nq, self.low, self.high = model.nq, self.env.action_space.low, self.env.action_space.high

    def error(self, t: Transitions, max_n: int = 1000) -> float | None:
        """Mean over transitions of the RMS (over dims) of s'_syn - s'_sim; None if unsupported."""
        if not self.supported:
            return None
        env, errs = self.env, []
        self.env.reset(seed=0)
        for i in range(min(max_n, len(t["rewards"]))):
            s, a, s2 = t["observations"][i], t["actions"][i], t["next_observations"][i]
            qpos = np.concatenate([[0.0], s[: self.nq - 1]])
            env.set_state(qpos, s[self.nq - 1 :])
            ctrl = self.low + (np.clip(a, -1, 1) + 1.0) * 0.5 * (
                self.high - self.low
            )  # [-1, 1] -> env bounds
            env.do_simulation(ctrl, env.frame_skip)
            errs.append(float(np.sqrt(np.mean((env._get_obs() - s2) ** 2))))
        return float(np.mean(errs)) if errs else None

    def close(self) -> None:
        self.env.close()
