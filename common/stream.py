"""The stream-x techniques shared by stream AC(λ), Q(λ) and TD(λ) (Elsayed, Vasan & Mahmood, 2024): the
plumbing of the papers/stream_ac, stream_q and stream_td plugins (their shared README: docs/stream_x.md).

Each piece names the upstream file (github.com/mohmdelsayed/streaming-drl) whose constants and formulas
it follows; the code is written afresh. The paper's five tricks:
  1. ObGD: eligibility traces plus a step size bounded so that one update cannot overshoot (Alg. 3);
  2. sparse initialisation: 90% of each unit's incoming weights are zero (Alg. 1);
  3. LayerNorm (no learned affine) before every LeakyReLU;
  4. observation normalisation with per-sample running statistics (Alg. 4);
  5. reward scaling by the running std of the discounted return (Alg. 5).
Each can be switched off by config, which gives the paper's "stream barrier" baselines (AC(λ)/Q(λ) with
plain SGD or Adam on traces, no normalisation, dense init, no LayerNorm).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("obgd", "adaptive_obgd", "sgd", "adam")


# ------------------------------------------------------------------ sparse init (upstream sparse_init.py)


def sparse_init_(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """In place: U(-1/√fan_in, 1/√fan_in), then ⌈sparsity·fan_in⌉ random inputs of each unit set to zero.

    Linear (out, in) and conv (out, in, h, w) weights alike: fan_in counts every input of one output unit.
    Draws from the global torch RNG (one `randperm` per unit, as upstream), so runs seed it with `seed`.
    """
    if weight.dim() not in (2, 4):
        raise ValueError(f"sparse_init_ takes 2-D or 4-D weights, got shape {tuple(weight.shape)}")
    rows = weight.data.view(weight.shape[0], -1)
    fan_in = rows.shape[1]
    num_zeros = math.ceil(sparsity * fan_in)
    bound = math.sqrt(1.0 / fan_in)
    with torch.no_grad():
        rows.uniform_(-bound, bound)
        for unit in range(rows.shape[0]):
            rows[unit, torch.randperm(fan_in)[:num_zeros]] = 0.0
    return weight


# ------------------------------------------------------------------ network trunk (stream_ac_continuous.py)


class StreamTrunk(nn.Module):
    """Linear → LayerNorm → LeakyReLU, twice: the hidden layers of every stream-x network.

    Upstream calls ``F.layer_norm(x, x.size())`` on an unbatched vector; normalising over the last
    dimension is the same thing and also works on a batch. No learned LayerNorm scale/shift (as upstream).
    """

    def __init__(self, in_dim: int, hidden: int, layer_norm: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.layer_norm = layer_norm
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc in (self.fc1, self.fc2):
            x = fc(x)
            if self.layer_norm:
                x = F.layer_norm(x, (self.hidden,))
            x = F.leaky_relu(x)  # negative slope 0.01, torch's default as upstream
        return x


class StreamValue(nn.Module):
    """A state-value network: the trunk and one linear output (stream AC's critic, stream TD's predictor)."""

    def __init__(self, obs_dim: int, hidden: int, layer_norm: bool) -> None:
        super().__init__()
        self.trunk = StreamTrunk(obs_dim, hidden, layer_norm)
        self.v = nn.Linear(hidden, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(self.trunk(obs)).squeeze(-1)


def init_stream_(module: nn.Module, sparse: bool, sparsity: float) -> None:
    """Upstream `initialize_weights`: every Linear gets sparse weights and zero biases.

    With `sparse=False` (a barrier baseline) torch's default Linear init is kept.
    """
    if not sparse:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            sparse_init_(m.weight, sparsity)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ ObGD and barrier optimisers (optim.py)


class TraceOptimizer:
    """Eligibility-trace updates of `params` driven by a scalar TD error δ, one call per transition.

    The caller back-propagates the *negative* prediction (e.g. ``(-v(s)).backward()``), so ``p.grad = -∇``;
    then ``step(δ)`` does, for every parameter (upstream optim.py, paper Alg. 3):

        z ← γλ z + p.grad                                   accumulating trace
        obgd:           M = κ · max(|δ|, 1) · ‖z‖₁ · α;   α' = α / M if M > 1 else α;   θ ← θ − α' δ z
        adaptive_obgd:  v ← β₂ v + (1−β₂)(δz)²;  v̂ = v / (1−β₂ᵗ);  the same bound on ‖z/√(v̂+ε)‖₁,
                        θ ← θ − α' δ z / √(v̂+ε)
        sgd (barrier):  θ ← θ − α δ z                        no bound
        adam (barrier): torch Adam(α) on the gradient δ z    no bound

    and zeroes the traces after the update when `reset` (episode end, or Q(λ)'s exploratory action).
    ‖·‖₁ sums over all parameters of the optimiser (one network).
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        kind: str,
        lr: float,
        gamma: float,
        lamda: float,
        kappa: float,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
        self.params = list(params)
        self.kind, self.lr, self.decay, self.kappa = kind, lr, gamma * lamda, kappa
        self.beta2, self.eps = beta2, eps
        self.traces = [torch.zeros_like(p) for p in self.params]
        self.second_moments = [torch.zeros_like(p) for p in self.params] if kind == "adaptive_obgd" else []
        self.count = 0  # adaptive_obgd's bias-correction counter
        self.adam = torch.optim.Adam(self.params, lr=lr) if kind == "adam" else None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def reset_traces(self) -> None:
        for z in self.traces:
            z.zero_()

    @torch.no_grad()
    def step(self, delta: float, reset: bool) -> float:
        """Apply one update with TD error `delta`; returns the effective step size α'."""
        for p, z in zip(self.params, self.traces, strict=True):
            z.mul_(self.decay)
            if p.grad is not None:
                z.add_(p.grad)
        step_size = self.lr
        if self.kind == "obgd":
            z_sum = sum(float(z.abs().sum()) for z in self.traces)
            step_size = self._bounded(delta, z_sum)
            for p, z in zip(self.params, self.traces, strict=True):
                p.add_(z, alpha=-step_size * delta)
        elif self.kind == "adaptive_obgd":
            self.count += 1
            correction = 1.0 - self.beta2**self.count
            scaled = []
            for z, v in zip(self.traces, self.second_moments, strict=True):
                v.mul_(self.beta2).addcmul_(z, z, value=(1.0 - self.beta2) * delta * delta)
                scaled.append(z / (v / correction + self.eps).sqrt())
            step_size = self._bounded(delta, sum(float(s.abs().sum()) for s in scaled))
            for p, s in zip(self.params, scaled, strict=True):
                p.add_(s, alpha=-step_size * delta)
        elif self.kind == "sgd":
            for p, z in zip(self.params, self.traces, strict=True):
                p.add_(z, alpha=-self.lr * delta)
        else:  # adam
            assert self.adam is not None
            for p, z in zip(self.params, self.traces, strict=True):
                p.grad = z * delta
            self.adam.step()
        if reset:
            self.reset_traces()
        return step_size

    def _bounded(self, delta: float, z_sum: float) -> float:
        # Alg. 3: δ̄ = max(|δ|, 1); M = α κ δ̄ ‖z‖₁; the step shrinks to α/M when M > 1
        m = self.lr * self.kappa * max(abs(delta), 1.0) * z_sum
        return self.lr / m if m > 1.0 else self.lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "traces": [z.clone() for z in self.traces],
            "second_moments": [v.clone() for v in self.second_moments],
            "count": self.count,
            "adam": self.adam.state_dict() if self.adam is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for dst, src in zip(self.traces, state["traces"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.second_moments, state["second_moments"], strict=True):
            dst.copy_(src)
        self.count = int(state["count"])
        if self.adam is not None:
            self.adam.load_state_dict(state["adam"])


# ------------------------------------------------------------------ normalisers (normalization_wrappers.py)


class SampleMeanStd:
    """Welford's running mean and *sample* variance of a stream of arrays (upstream `SampleMeanStd`).

    The variance is 1 until two samples have been seen; float64 throughout.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.p = np.zeros(shape, np.float64)  # sum of squared deviations
        self.count = 0

    @property
    def var(self) -> np.ndarray:
        return np.ones_like(self.p) if self.count < 2 else self.p / (self.count - 1)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        self.count += 1
        new_mean = self.mean + (x - self.mean) / self.count
        self.p = self.p + (x - self.mean) * (x - new_mean)
        self.mean = new_mean

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(np.array(self.mean, np.float64)),
            "p": torch.from_numpy(np.array(self.p, np.float64)),
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state["mean"].numpy().astype(np.float64)
        self.p = state["p"].numpy().astype(np.float64)
        self.count = int(state["count"])


class ObservationNormalizer:
    """Alg. 4 (upstream `NormalizeObservation`): update the statistics with `x`, then return
    ``(x − μ) / √(σ² + ε)``. The first `dim` coordinates are normalised; any further ones (the time
    feature, which upstream appends after normalising) pass through. `enabled=False` passes all through."""

    def __init__(self, dim: int, enabled: bool, eps: float = 1e-8) -> None:
        self.stats = SampleMeanStd((dim,))
        self.dim, self.enabled, self.eps = dim, enabled, eps

    def __call__(self, x: np.ndarray, update: bool) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if not self.enabled:
            return x.astype(np.float32)
        head = x[: self.dim]
        if update:
            self.stats.update(head)
        out = x.copy()
        out[: self.dim] = (head - self.stats.mean) / np.sqrt(self.stats.var + self.eps)
        return out.astype(np.float32)


class RewardScaler:
    """Alg. 5 (upstream `ScaleReward`): u ← γ u (1 − done) + r; update the statistics of u; return
    ``r / √(σ²_u + ε)``. As upstream, the trace is cut on the step that ends an episode (that step's
    reward starts it afresh). `enabled=False` returns `r` unchanged."""

    def __init__(self, gamma: float, enabled: bool, eps: float = 1e-8) -> None:
        self.stats = SampleMeanStd(())
        self.gamma, self.enabled, self.eps = gamma, enabled, eps
        self.trace = 0.0

    def __call__(self, reward: float, done: bool) -> float:
        if not self.enabled:
            return float(reward)
        self.trace = self.trace * self.gamma * (1.0 - float(done)) + reward
        self.stats.update(np.asarray(self.trace, np.float64))
        return float(reward / np.sqrt(self.stats.var + self.eps))

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "trace": float(self.trace)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.trace = float(state["trace"])


class StreamObservations:
    """Normalises each observation exactly once, as upstream's env wrapper does: `next_obs` in `learn()`
    (stats updated), then the same array again as the next `act()`'s `obs` (cached, not re-counted).

    An observation not seen before (an episode's first) updates the statistics in `act()`; evaluation
    normalises with frozen statistics.
    """

    def __init__(self, dim: int, enabled: bool) -> None:
        self.normalizer = ObservationNormalizer(dim, enabled)
        self._raw: np.ndarray | None = None
        self._normed: np.ndarray | None = None

    def current(self, obs: np.ndarray, eval_mode: bool) -> np.ndarray:
        if eval_mode:
            return self.normalizer(obs, update=False)
        if self._raw is not None and (obs is self._raw or np.array_equal(obs, self._raw)):
            return self._normed  # type: ignore[return-value]
        self._raw, self._normed = obs, self.normalizer(obs, update=True)
        return self._normed

    def next(self, next_obs: np.ndarray, done: bool) -> np.ndarray:
        normed = self.normalizer(next_obs, update=True)
        self._raw, self._normed = (None, None) if done else (next_obs, normed)
        return normed

    def forget(self) -> None:
        self._raw = self._normed = None

    def state_dict(self) -> dict[str, Any]:
        """The statistics and the cached current observation: a run checkpointed mid-episode resumes with
        that observation already counted, as an uninterrupted run would."""
        cached: dict[str, torch.Tensor | None] = {"raw": None, "normed": None}
        if self._raw is not None and self._normed is not None:
            raw = np.array(self._raw)  # act() may hold any array-like; the cache compares by value
            cached = {"raw": torch.from_numpy(raw), "normed": torch.from_numpy(self._normed.copy())}
        return {**self.normalizer.stats.state_dict(), **cached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.normalizer.stats.load_state_dict(state)
        raw, normed = state.get("raw"), state.get("normed")  # absent in checkpoints of earlier versions
        self._raw = None if raw is None else raw.numpy()
        self._normed = None if normed is None else normed.numpy()
