"""The learned dynamics ensemble Uni-O4 uses for offline policy evaluation (OPE).

Lei-Kun/Uni-O4 @1eecc45 takes it from MOBILE / OfflineRL-Kit: `transition_model/models/dynamics_model.py`
(`EnsembleDynamicsModel`: 7 members, 5 elites, 4x200 Swish, per-layer weight decay, learned soft bounds on
the log-variance), `transition_model/dynamics/ensemble_dynamics.py` (`train`, `step`: Gaussian NLL on
(s' - s, r), a random elite per sample) and `transition_model/utils/termination_fns.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleLinear(nn.Module):
    """One Linear per member: weights trunc-normal(std 1 / (2 sqrt(in))), zero bias (nets.py)."""

    def __init__(self, in_dim: int, out_dim: int, members: int, weight_decay: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        nn.init.trunc_normal_(self.weight, std=1 / (2 * in_dim**0.5))
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # the same inputs for every member
            return torch.einsum("bi,eio->ebo", x, self.weight) + self.bias
        return torch.einsum("ebi,eio->ebo", x, self.weight) + self.bias

    def decay_loss(self) -> torch.Tensor:
        return self.weight_decay * 0.5 * (self.weight**2).sum()


def soft_clamp(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """dynamics_model.py `soft_clamp`: high - softplus(high - x), then low + softplus(x - low)."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


class EnsembleDynamics(nn.Module):
    """p(s' - s, r | s, a) = N(mu, exp(logvar)) per member, inputs standardised by the training statistics."""

    # buffers registered in __init__ (nn.Module.__getattr__ would type them as `Tensor | Module`)
    elites: torch.Tensor
    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: list[int],
        members: int,
        elites: int,
        weight_decays: list[float],
    ) -> None:
        super().__init__()
        dims = [obs_dim + action_dim, *hidden]
        self.layers = nn.ModuleList(
            EnsembleLinear(i, o, members, wd)
            for i, o, wd in zip(dims[:-1], dims[1:], weight_decays[:-1], strict=True)
        )
        self.out = EnsembleLinear(dims[-1], 2 * (obs_dim + 1), members, weight_decays[-1])
        self.max_logvar = nn.Parameter(torch.full((obs_dim + 1,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((obs_dim + 1,), -10.0))
        self.register_buffer("elites", torch.arange(elites))
        self.register_buffer("in_mean", torch.zeros(obs_dim + action_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + action_dim))
        self.members, self.num_elites = members, elites

    def forward(self, obs_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = (obs_action - self.in_mean) / self.in_std  # scaler.transform
        for layer in self.layers:
            h = F.silu(layer(h))  # Swish
        mean, logvar = self.out(h).chunk(2, dim=-1)
        return mean, soft_clamp(logvar, self.min_logvar, self.max_logvar)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, logvar_coef: float) -> torch.Tensor:
        """ensemble_dynamics.py `learn`: sum over members of mean((mu - y)^2 / var) + mean(logvar), plus the
        weight decays and logvar_coef * (sum max_logvar - sum min_logvar). `inputs`: (E, B, d)."""
        mean, logvar = self(inputs)
        nll = (((mean - targets) ** 2) * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))
        decay = sum(layer.decay_loss() for layer in [*self.layers, self.out])
        return nll.sum() + decay + logvar_coef * (self.max_logvar.sum() - self.min_logvar.sum())

    @torch.no_grad()
    def holdout_mse(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-member MSE on held-out transitions (`validate`): the elites are the lowest."""
        mean, _ = self(inputs)
        return ((mean - targets) ** 2).mean(dim=(1, 2))

    @torch.no_grad()
    def step(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`EnsembleDynamics.step`: sample every member's Gaussian, keep a random elite's sample per row."""
        mean, logvar = self(torch.cat([obs, action], dim=-1))
        mean = torch.cat([mean[..., :-1] + obs, mean[..., -1:]], dim=-1)
        samples = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        pick = self.elites[torch.randint(0, self.num_elites, (obs.shape[0],), device=obs.device)]
        chosen = samples[pick, torch.arange(obs.shape[0], device=obs.device)]
        return chosen[:, :-1], chosen[:, -1]


def terminated(kind: str, next_obs: torch.Tensor) -> torch.Tensor:
    """termination_fns.py for the model rollouts: `hopper` (finite, obs[1:] < 100, height > 0.7,
    |angle| < 0.2), `walker2d` (0.8 < height < 2, -1 < angle < 1), `halfcheetah` (a state leaves +-100),
    `none` (never)."""
    finite = torch.isfinite(next_obs).all(-1)
    if kind == "hopper":  # upstream writes np.abs(next_obs[:, 1:] < 100): the abs of a bool, i.e. `< 100`
        ok = finite & (next_obs[:, 1:] < 100).all(-1) & (next_obs[:, 0] > 0.7) & (next_obs[:, 1].abs() < 0.2)
    elif kind == "walker2d":
        height, angle = next_obs[:, 0], next_obs[:, 1]
        ok = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    elif kind == "halfcheetah":
        ok = ((next_obs > -100) & (next_obs < 100)).all(-1)
    else:
        ok = torch.ones_like(finite)
    return ~ok
