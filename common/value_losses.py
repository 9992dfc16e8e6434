"""Value losses for value-based agents, chosen by one config key (`paper.agent.loss`).

A value head outputs `num_outputs` numbers per action: 1 for the regressions (`mse`, `huber`), the logits
of a categorical distribution over `num_bins` locations for the classifications (`hl_gauss`, `two_hot`,
`c51`). `value(out)` is the scalar (the expectation over the locations), `target(reward, discount, next_out)`
builds the bootstrapped target from the output at the next state's chosen action, and `loss(out, target)`
is the per-sample loss. Every classification loss is a cross-entropy against a target distribution:

- `hl_gauss`: the histogram loss with a Gaussian (Imani & White, 2018): the target N(y, sigma^2) integrated
  over m bins that tile [v_min, v_max], renormalised to the support; sigma = `sigma_ratio` x bin width
  (0.75 in "Stop Regressing", Farebrother et al., ICML 2024, Sec. 3.1, which spreads the mass over about six
  bins). Locations: the bin centres.
- `two_hot`: y split between the two nearest bin centres so that the expectation is y (Sec. 3.1).
- `c51`: categorical distributional RL (Bellemare, Dabney & Munos, 2017, Alg. 1): the target network's
  distribution at the next state, shifted and discounted (r + gamma^n z), projected back onto m atoms
  spaced evenly from v_min to v_max (the atoms include both ends).

HL-Gauss and two-hot targets are clipped to the support first; C51 clips the shifted atoms (Alg. 1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from common.errors import ConfigError

LOSSES = ("mse", "huber", "hl_gauss", "two_hot", "c51")
CLASSIFICATION = ("hl_gauss", "two_hot", "c51")


class ValueLoss(Protocol):
    """A value head's parameterisation and loss (see the module docstring)."""

    num_outputs: int  # outputs per action

    def value(self, out: torch.Tensor) -> torch.Tensor:
        """Scalar values (...,) of head outputs (..., num_outputs)."""
        ...

    def target(self, reward: torch.Tensor, discount: torch.Tensor, next_out: torch.Tensor) -> torch.Tensor:
        """The bootstrapped target from rewards (B,), discounts (B,) and next outputs (B, num_outputs)."""
        ...

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (B,) of outputs (B, num_outputs) against `target`."""
        ...


# ------------------------------------------------------------------------------------------ regression


class MSELoss:
    """Squared TD error (y - Q)^2."""

    num_outputs = 1

    def value(self, out: torch.Tensor) -> torch.Tensor:
        return out[..., 0]

    def target(self, reward: torch.Tensor, discount: torch.Tensor, next_out: torch.Tensor) -> torch.Tensor:
        return reward + discount * self.value(next_out)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.value(out) - target).pow(2)


class HuberLoss(MSELoss):
    """Huber loss with threshold `delta` (1 in DQN's error clipping, Mnih et al. 2015, Methods)."""

    def __init__(self, delta: float = 1.0) -> None:
        self.delta = float(delta)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(self.value(out), target, reduction="none", delta=self.delta)


# ------------------------------------------------------------------------------------- classification


class _Categorical(ABC):
    """Softmax over fixed `locations` (m,); the value is the expectation. Subclasses build the target
    distribution of a scalar target (`probs`)."""

    def __init__(self, locations: torch.Tensor) -> None:
        self.locations = locations
        self.num_outputs = int(locations.numel())

    def value(self, out: torch.Tensor) -> torch.Tensor:
        return (out.float().softmax(-1) * self.locations.to(out.device)).sum(-1)

    def target(self, reward: torch.Tensor, discount: torch.Tensor, next_out: torch.Tensor) -> torch.Tensor:
        return reward + discount * self.value(next_out)  # a scalar; `loss` turns it into a distribution

    @abstractmethod
    def probs(self, y: torch.Tensor) -> torch.Tensor:
        """The target distribution (B, m) of scalar targets (B,)."""

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = target if target.dim() == out.dim() else self.probs(target)
        return -(probs * out.float().log_softmax(-1)).sum(-1)


class HLGaussLoss(_Categorical):
    """Histogram loss with Gaussian targets over `num_bins` bins of [v_min, v_max] (module docstring)."""

    def __init__(self, v_min: float, v_max: float, num_bins: int, sigma_ratio: float) -> None:
        self.edges = torch.linspace(v_min, v_max, num_bins + 1, dtype=torch.float64)
        self.bin_width = (v_max - v_min) / num_bins
        self.sigma = sigma_ratio * self.bin_width
        self.v_min, self.v_max = float(v_min), float(v_max)
        super().__init__(((self.edges[:-1] + self.edges[1:]) / 2).float())

    def probs(self, y: torch.Tensor) -> torch.Tensor:
        # p_i = [Phi((e_{i+1} - y)/sigma) - Phi((e_i - y)/sigma)]
        #       / [Phi((v_max - y)/sigma) - Phi((v_min - y)/sigma)]
        # the Gaussian's mass in bin i, renormalised so that the mass outside [v_min, v_max] is not lost.
        y = y.double().clamp(self.v_min, self.v_max).unsqueeze(-1)
        cdf = torch.special.ndtr((self.edges.to(y.device) - y) / self.sigma)
        mass = cdf[..., 1:] - cdf[..., :-1]
        return (mass / (cdf[..., -1:] - cdf[..., :1])).float()


class TwoHotLoss(_Categorical):
    """Two-hot targets on the centres of `num_bins` bins of [v_min, v_max] (HL-Gauss's locations)."""

    def __init__(self, v_min: float, v_max: float, num_bins: int) -> None:
        width = (v_max - v_min) / num_bins
        super().__init__(torch.linspace(v_min + width / 2, v_max - width / 2, num_bins))
        self.width = width

    def probs(self, y: torch.Tensor) -> torch.Tensor:
        z = self.locations.to(y.device)
        y = y.float().clamp(float(z[0]), float(z[-1]))
        b = (y - z[0]) / self.width  # position in bins
        lower = b.floor().clamp(max=self.num_outputs - 2).long()
        upper_weight = b - lower.float()
        probs = torch.zeros(*y.shape, self.num_outputs, device=y.device)
        probs.scatter_(-1, lower.unsqueeze(-1), (1.0 - upper_weight).unsqueeze(-1))
        probs.scatter_add_(-1, (lower + 1).unsqueeze(-1), upper_weight.unsqueeze(-1))
        return probs


class C51Loss(_Categorical):
    """C51: `num_atoms` atoms from v_min to v_max; targets are projected distributions (module docstring)."""

    def __init__(self, v_min: float, v_max: float, num_atoms: int) -> None:
        super().__init__(torch.linspace(v_min, v_max, num_atoms))
        self.v_min, self.v_max = float(v_min), float(v_max)
        self.delta = (v_max - v_min) / (num_atoms - 1)

    def target(self, reward: torch.Tensor, discount: torch.Tensor, next_out: torch.Tensor) -> torch.Tensor:
        return self.project(reward, discount, next_out.float().softmax(-1))

    def project(self, reward: torch.Tensor, discount: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Alg. 1: the atoms r + gamma z_j (clipped to [v_min, v_max]) carry p_j; each splits its mass
        between its two neighbouring atoms in proportion to closeness:
        m_i = sum_j p_j [1 - |Tz_j - z_i| / dz]_0^1.
        """
        z = self.locations.to(probs.device)
        shifted = (reward.unsqueeze(-1) + discount.unsqueeze(-1) * z).clamp(self.v_min, self.v_max)  # (B, m)
        closeness = (1.0 - (shifted.unsqueeze(-1) - z).abs() / self.delta).clamp(min=0.0)  # (B, m_j, m_i)
        return (probs.unsqueeze(-1) * closeness).sum(-2)

    def probs(self, y: torch.Tensor) -> torch.Tensor:
        # A scalar as a distribution: with discount 0 every shifted atom sits at y, so the projection is
        # y's split between its two neighbouring atoms (two-hot on the atoms).
        anything = torch.full((*y.shape, self.num_outputs), 1.0 / self.num_outputs, device=y.device)
        return self.project(y.float(), torch.zeros_like(y, dtype=torch.float32), anything)


# ---------------------------------------------------------------------------------------------- factory


def check_value_loss(cfg: Mapping[str, Any], where: str = "paper.agent") -> None:
    """One-line ConfigErrors for a bad `loss`, support or bin count (`cfg` holds `loss`, `v_min`, `v_max`,
    `num_bins`, `sigma_ratio`, `huber_delta`)."""
    name = cfg.get("loss")
    if name not in LOSSES:
        raise ConfigError(f"{where}.loss={name!r} is not a value loss; choose one of {', '.join(LOSSES)}")
    if name == "huber":
        delta = cfg.get("huber_delta", 1.0)
        if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not delta > 0:
            raise ConfigError(f"{where}.huber_delta={delta!r} must be a positive number")
    if name not in CLASSIFICATION:
        return
    v_min, v_max, bins = cfg.get("v_min"), cfg.get("v_max"), cfg.get("num_bins")
    for key, value in (("v_min", v_min), ("v_max", v_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}.{key}={value!r} must be a finite number for loss {name}")
    assert isinstance(v_min, (int, float)) and isinstance(v_max, (int, float))
    if v_min >= v_max:
        raise ConfigError(f"{where}.v_min={v_min} must be below {where}.v_max={v_max} (the value support)")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"{where}.num_bins={bins!r} must be an integer >= 2 for loss {name}")
    if name == "hl_gauss":
        ratio = cfg.get("sigma_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ConfigError(f"{where}.sigma_ratio={ratio!r} must be a positive number (sigma / bin width)")


def make_value_loss(cfg: Mapping[str, Any], where: str = "paper.agent") -> ValueLoss:
    """The `ValueLoss` named by `cfg.loss`, after `check_value_loss`."""
    check_value_loss(cfg, where)
    name = cfg["loss"]
    if name == "mse":
        return MSELoss()
    if name == "huber":
        return HuberLoss(float(cfg.get("huber_delta", 1.0)))
    v_min, v_max, bins = float(cfg["v_min"]), float(cfg["v_max"]), int(cfg["num_bins"])
    if name == "hl_gauss":
        return HLGaussLoss(v_min, v_max, bins, float(cfg["sigma_ratio"]))
    if name == "two_hot":
        return TwoHotLoss(v_min, v_max, bins)
    return C51Loss(v_min, v_max, bins)
