"""`TransitionUpsampler`: fit a fresh denoiser to transitions (EDM loss, AdamW, EMA) and sample new ones."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from common.buffers.diffusion.config import DiffusionConfig, Transitions
from common.buffers.diffusion.edm import EDM
from common.buffers.diffusion.layout import StandardNormalizer, TransitionLayout
from common.errors import CheckpointError, ConfigError
from common.networks.denoiser import ResidualMLPDenoiser
from common.precision import check_precision


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
