"""Value losses of the implicit-maximisation family: V(s) regressed onto Q(s, a) of dataset actions with an
asymmetric loss whose minimiser is a soft maximum of Q over the data's actions.

XQL (Garg et al., ICLR 2023) uses the Gumbel loss; Dual RL's f-DVL (Sikchi et al., ICLR 2024) derives the
same family from f-divergences (the Gumbel loss is its reverse-KL member) and adds chi-square and total
variation; ReCOIL reuses the Gumbel loss for its value. Every function takes ``diff = Q - V`` and returns the
per-sample loss (same shape, no reduction), so callers can mask or average. Sources:
Div99/XQL @dff09af offline/critic.py (`gumbel_rescale_loss`), hari-sikchi/DVL @4b7cf11 offline/critic.py
(`chi_square_loss`, `total_variation_loss`, `reverse_kl_loss`).
"""

from __future__ import annotations

import torch

F_DIVERGENCES = ("chi_square", "total_variation", "reverse_kl")


def gumbel_loss(diff: torch.Tensor, beta: float, max_clip: float | None) -> torch.Tensor:
    """XQL's Gumbel regression loss e^z - z - 1, z = (Q - V) / beta, in the official rescaled form.

    z is clipped above at `max_clip` (None: no clip). With m = max(max over the batch (dim 0) of z, -1),
    detached, the loss is e^(z - m) - z e^(-m) - e^(-m) = e^(-m) (e^z - z - 1): the same minimiser, with
    gradients divided by e^m, "training with an adaptive lr" (critic.py `gumbel_rescale_loss`).
    """
    z = diff / beta
    if max_clip is not None:
        z = z.clamp(max=max_clip)
    m = z.max(dim=0).values.clamp(min=-1.0).detach()
    return torch.exp(z - m) - z * torch.exp(-m) - torch.exp(-m)


def chi_square_loss(diff: torch.Tensor, lam: float) -> torch.Tensor:
    """f-DVL, chi-square: lam * max(d + d^2 / 4, 0) - (1 - lam) * d, d = Q - V (DVL critic.py)."""
    return lam * torch.clamp(diff + diff.pow(2) / 4.0, min=0.0) - (1.0 - lam) * diff


def total_variation_loss(diff: torch.Tensor, lam: float) -> torch.Tensor:
    """f-DVL, total variation: lam * max(d, 0) - (1 - lam) * d, d = Q - V (DVL critic.py)."""
    return lam * torch.clamp(diff, min=0.0) - (1.0 - lam) * diff


def f_dvl_loss(f: str, diff: torch.Tensor, temp: float, max_clip: float | None) -> torch.Tensor:
    """DVL critic.py `update_v`: the loss of divergence `f` at DVL's `--temp` (lam for chi-square and total
    variation, the Gumbel beta for reverse KL, where DVL is XQL)."""
    if f == "chi_square":
        return chi_square_loss(diff, temp)
    if f == "total_variation":
        return total_variation_loss(diff, temp)
    if f == "reverse_kl":
        return gumbel_loss(diff, temp, max_clip)
    raise ValueError(f"unknown f-divergence {f!r}; choose one of {', '.join(F_DIVERGENCES)}")
