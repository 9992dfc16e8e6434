"""The objectives, each as a functional of the return distribution and as a stock-augmented expected utility
(Ávila Pires et al. 2025, Sec. 5 "Applications"):

- `expected`: E[G]; stock form f(x) = x with c_0 = 0.
- `cvar`: CVaR_α(G), the mean of the worst α fraction of G; f(x) = min(x, 0) / α with c_0 = -b for every
  candidate b, and the value max_b b + E[f(c_0 + G)] (Rockafellar and Uryasev 2000; Bäuerle and Ott 2011).
- `threshold`: P(G >= τ); f(x) = 1[x >= 0] with c_0 = -τ.
- `homeostatic`: -E|G - τ|, keeping the return near the target τ; f(x) = -|x| with c_0 = -τ.

Each f is positively homogeneous (f(γx) = γ f(x), or unchanged for the indicator), so its ranking of
stock-augmented return distributions is the same whether the stock is seen at step 0 or rescaled by γ^t at
step t: what the paper requires of an objective for distributional DP to optimise it (Sec. 4). The paper
states homeostatic regulation as keeping a quantity near a set point; the absolute deviation of the return
from a target is this implementation's instance of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

NAMES = ("expected", "cvar", "threshold", "homeostatic")
EPS = 1e-9


def cvar(probs: np.ndarray, atoms: np.ndarray, alpha: float) -> np.ndarray:
    """CVaR_α of categorical distributions probs[..., j] on increasing `atoms`: the mean of the lowest α of
    the probability mass (a fraction of the atom at the α-quantile counted in part)."""
    cdf_before = np.cumsum(probs, -1) - probs
    weight = np.clip(np.minimum(probs, alpha - cdf_before), 0.0, None)
    return (weight * atoms).sum(-1) / alpha


@dataclass(frozen=True)
class Objective:
    name: str
    alpha: float = 1.0  # cvar
    tau: float = 0.0  # threshold and homeostatic target

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ConfigError(
                f"paper.objective={self.name!r} does not exist: choose one of {', '.join(NAMES)}"
            )
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"paper.alpha={self.alpha} must be in (0, 1] (the CVaR level)")

    def value(self, probs: np.ndarray, atoms: np.ndarray) -> np.ndarray:
        """The objective of return distributions probs[..., j] on `atoms` (no stock)."""
        if self.name == "expected":
            return probs @ atoms
        if self.name == "cvar":
            return cvar(probs, atoms, self.alpha)
        if self.name == "threshold":
            return probs @ (atoms >= self.tau - EPS).astype(float)
        return -(probs @ np.abs(atoms - self.tau))

    def utility(self, x: np.ndarray) -> np.ndarray:
        """f(x): the stock-augmented expected utility of x = c_0 + G."""
        if self.name == "expected":
            return x.astype(float)
        if self.name == "cvar":
            return np.minimum(x, 0.0) / self.alpha
        if self.name == "threshold":
            return (x >= -EPS).astype(float)
        return -np.abs(x)

    def initial_stocks(self, returns: np.ndarray) -> np.ndarray:
        """c_0 for each optimisation: CVaR tries b = every return on the grid (the optimal b is an α-quantile
        of G, so it is one of them), the others use one."""
        if self.name == "expected":
            return np.zeros(1)
        if self.name == "cvar":
            return -returns
        return np.array([-self.tau])

    def offset(self, c0: float) -> float:
        """What the objective adds to E[f(c_0 + G)]: b = -c_0 for CVaR, nothing otherwise."""
        return -c0 if self.name == "cvar" else 0.0
