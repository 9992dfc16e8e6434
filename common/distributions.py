"""Action distributions (drqv2 `utils.py`, class `TruncatedNormal`)."""

from __future__ import annotations

import torch
from torch import distributions as pyd

_SCALAR = torch.Size()
ShapeLike = torch.Size | list[int] | tuple[int, ...]


class TruncatedNormal(pyd.Normal):
    """Normal(loc, scale) whose samples are clamped to ``[low + eps, high - eps]``.

    The clamp is straight-through: the sample's value is clamped but its gradient flows to `loc` (and
    `scale`) as if unclamped. `sample(clip=c)` first clips the standard-scaled noise to ±c. Samples are
    reparameterised (differentiable), unlike `torch.distributions.Normal.sample`. `mean`, `log_prob` and
    `entropy` are those of the underlying, untruncated Normal, as in DrQ-v2.
    """

    def __init__(
        self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0, eps: float = 1e-6
    ) -> None:
        super().__init__(loc, scale, validate_args=False)
        self.low = low
        self.high = high
        self.eps = eps

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        clamped = torch.clamp(x, self.low + self.eps, self.high - self.eps)
        return x - x.detach() + clamped.detach()  # straight-through estimator

    def sample(self, clip: float | None = None, sample_shape: ShapeLike = _SCALAR) -> torch.Tensor:  # type: ignore[override]
        """``clamp(loc + clip(scale * N(0, 1), ±clip))`` with a straight-through clamp; differentiable."""
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device) * self.scale
        if clip is not None:
            noise = torch.clamp(noise, -clip, clip)
        return self._clamp(self.loc + noise)

    def rsample(self, sample_shape: ShapeLike = _SCALAR) -> torch.Tensor:
        """Same as ``sample(clip=None)``: clamped, reparameterised."""
        return self.sample(clip=None, sample_shape=sample_shape)
