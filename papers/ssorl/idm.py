"""SS-ORL's inverse-dynamics model (IDM): proxy actions for action-free trajectories.

Zheng, Henaff, Amos & Grover, ICML 2023 (arXiv 2210.06518), Sec. 4 / Alg. 1 step 1-2: fit
``phi(a_t | s_{t-k}, ..., s_t, s_{t+1})`` on the labelled trajectories by maximum likelihood, then label every
action-free step with the ensemble's mean action. Every detail follows facebookresearch/ssorl @cfefabe:
`model/mlp.py` (`DiagGaussianDistribution`, `SquashedNormal`), `inverse_model_seq.py` (`train_inverse_model`,
`predict_actions_unlabeled_trajs`), `data.py` (`get_transition`: the window), `config/config.yaml`
(`inverse_model.*`).

Reads top to bottom: the window (the IDM's input), the network, the loss (Eq. IDM NLL), training, prediction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.networks import mlp

ACTION_CLIP = 1.0 - 1e-6  # utils.py get_env_spec: action_range = [low + 1e-6, high - 1e-6]
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------
# The window (data.py `get_transition`, num_past_transitions = k): the states s_{t-k}, ..., s_t and s_{t+1},
# raw states of zeros where the window runs before the episode's start, then each state normalised by the
# dataset mean/std (+1e-6; data.py `load_dataset`). Flattened: (k + 2) * obs_dim inputs.
# DEVIATION: at an episode's last step upstream slices `observations[t-k : t+2]`, which lacks s_{t+1} (the
# trajectory stores T observations), so its zero padding shifts the window by one; we take s_{t+1} from
# next_observations, the same window as at every other step.
# ---------------------------------------------------------------------------------------------------
def windows(
    observations: np.ndarray,
    next_observations: np.ndarray,
    episode_starts: np.ndarray,
    k: int,
    mean: np.ndarray,
    std: np.ndarray,
) -> np.ndarray:
    """(N, (k + 2) * D) float32 IDM inputs for every row of a flat dataset."""
    n, d = observations.shape
    lengths = np.diff(np.append(episode_starts, n))
    start_of_row = np.repeat(episode_starts, lengths)
    rows = np.arange(n)
    parts = []
    for lag in range(k, -1, -1):  # s_{t-k} ... s_t
        src = rows - lag
        inside = src >= start_of_row
        part = np.zeros((n, d), np.float64)
        part[inside] = observations[src[inside]]
        parts.append(part)
    parts.append(next_observations.astype(np.float64))  # s_{t+1}
    stacked = (np.stack(parts, axis=1) - mean) / std
    return stacked.reshape(n, -1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# The network (model/mlp.py `DiagGaussianDistribution`): two MLPs on the window, one for the pre-tanh mean mu
# and one for log sigma, each Linear -> ReLU per hidden layer, Dropout before the output Linear, every Linear
# orthogonal (gain 1) with zero bias. log sigma = min + (max - min) (tanh(raw) + 1) / 2 in [-5, 2]; the
# action distribution is tanh(N(mu, sigma^2)) (`SquashedNormal`), whose mean is taken as tanh(mu).
# ---------------------------------------------------------------------------------------------------
class InverseDynamics(nn.Module):
    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int],
        dropout: float,
        log_std_min: float,
        log_std_max: float,
    ) -> None:
        super().__init__()
        self.mu = self._net(in_dim, action_dim, hidden_dims, dropout)
        self.log_std = self._net(in_dim, action_dim, hidden_dims, dropout)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _net(in_dim: int, out_dim: int, hidden_dims: Sequence[int], dropout: float) -> nn.Sequential:
        body = mlp(in_dim, list(hidden_dims)[:-1], list(hidden_dims)[-1], output_activation=nn.ReLU)
        return nn.Sequential(*body, nn.Dropout(dropout), nn.Linear(list(hidden_dims)[-1], out_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = torch.tanh(self.log_std(x))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (raw + 1.0)
        return self.mu(x), log_std


def squashed_nll(mu: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Eq. IDM: -log p(a | window) of tanh(N(mu, sigma^2)), summed over action dims, per row (B,).

    u = atanh(a) (a clipped to +-(1 - 1e-6), as upstream clamps actions to its action_range);
    log p(a) = log N(u; mu, sigma) - log|d tanh(u)/du|, log|.| = 2 (log 2 - u - softplus(-2u)).
    """
    a = action.clamp(-ACTION_CLIP, ACTION_CLIP)
    u = 0.5 * (torch.log1p(a) - torch.log1p(-a))
    log_normal = -0.5 * ((u - mu) / log_std.exp()).pow(2) - log_std - LOG_SQRT_2PI
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return -(log_normal - log_det).sum(-1)


# ---------------------------------------------------------------------------------------------------
# Training (inverse_model_seq.py `train_inverse_model`): a fraction `validation_fraction` (0.1) of the
# labelled trajectories is held out; each ensemble member is trained with Adam (lr 1e-4) on shuffled
# minibatches (1024) of the other labelled steps for `train_steps` updates, its validation NLL measured at
# step 1 and every 10th, and the member with the lowest validation NLL kept.
# DEVIATION: upstream's `inverse_model = copy.deepcopy(best_inverse_model)` rebinds a local name, so the
# *last* member is what it uses; we keep the best one, the evident intent. With no held-out trajectory (fewer
# than 10 labelled), the last member is kept.
# ---------------------------------------------------------------------------------------------------
def train_ensemble(
    members: list[InverseDynamics],
    inputs: np.ndarray,
    actions: np.ndarray,
    episode_of_row: np.ndarray,
    labelled: np.ndarray,
    *,
    lr: float,
    batch_size: int,
    train_steps: int,
    validation_fraction: float,
    eval_every: int,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> dict[str, float]:
    """Fit each member in place; returns the final train and best validation NLL (averaged over members)."""
    rng = np.random.default_rng(seed)
    n_val = int(len(labelled) * validation_fraction)
    val_eps = rng.choice(labelled, size=n_val, replace=False) if n_val else np.zeros(0, np.int64)
    train_eps = np.setdiff1d(labelled, val_eps)
    train_rows = np.flatnonzero(np.isin(episode_of_row, train_eps))
    val_rows = np.flatnonzero(np.isin(episode_of_row, val_eps))
    x = torch.as_tensor(inputs, device=device)
    a = torch.as_tensor(actions, device=device)

    def row_nll(member: InverseDynamics, rows: np.ndarray) -> torch.Tensor:
        mu, log_std = member(x[rows])
        return squashed_nll(mu, log_std, a[rows])

    def nll(member: InverseDynamics, rows: np.ndarray) -> float:
        member.eval()
        with torch.no_grad():
            total = sum(
                row_nll(member, rows[i : i + 4 * batch_size]).sum()
                for i in range(0, len(rows), 4 * batch_size)
            )
        return float(total) / len(rows)

    stats = {"idm_train_nll": 0.0, "idm_val_nll": float("nan")}
    val_losses = []
    for m, member in enumerate(members):
        opt = torch.optim.Adam(member.parameters(), lr=lr)
        best, best_state = math.inf, None
        perm, cursor = rng.permutation(train_rows), 0
        bar = tqdm(
            range(1, train_steps + 1), desc=f"IDM {m + 1}/{len(members)}", disable=not progress, leave=False
        )
        for it in bar:
            if cursor >= len(perm):  # a new epoch (DataLoader shuffle=True); the last batch may be short
                perm, cursor = rng.permutation(train_rows), 0
            rows = perm[cursor : cursor + batch_size]
            cursor += batch_size
            member.train()
            loss = row_nll(member, rows).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if len(val_rows) and (it == 1 or it % eval_every == 0):
                val = nll(member, val_rows)
                if val < best:
                    best, best_state = val, copy.deepcopy(member.state_dict())
                bar.set_postfix(train=f"{loss.item():.3f}", val=f"{val:.3f}")
        if best_state is not None:
            member.load_state_dict(best_state)
            val_losses.append(best)
        stats["idm_train_nll"] += nll(member, train_rows) / len(members)
    if val_losses:
        stats["idm_val_nll"] = float(np.mean(val_losses))
    return stats


# ---------------------------------------------------------------------------------------------------
# Proxy labels (inverse_model_seq.py `predict_actions_unlabeled_trajs`): the mean over members of each
# member's mean action tanh(mu), clipped to the action range; uncertainty (logged) is the Gaussian-mixture
# variance of the members' pre-tanh Gaussians averaged over action dims, as upstream computes it.
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(
    members: list[InverseDynamics], inputs: np.ndarray, device: torch.device, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(proxy actions (N, A), per-row uncertainty (N,)), float32."""
    means, variances = [], []
    for i in range(0, len(inputs), chunk):
        x = torch.as_tensor(inputs[i : i + chunk], device=device)
        mus, stds = [], []
        for member in members:
            member.eval()
            mu, log_std = member(x)
            mus.append(torch.tanh(mu))
            stds.append(log_std.exp())
        mu_all, std_all = torch.stack(mus), torch.stack(stds)
        mean = mu_all.mean(0)
        var = std_all.pow(2).mean(0) + mu_all.pow(2).mean(0) - mean.pow(2)
        means.append(mean.clamp(-ACTION_CLIP, ACTION_CLIP).cpu())
        variances.append(var.mean(-1).cpu())
    return torch.cat(means).numpy().astype(np.float32), torch.cat(variances).numpy().astype(np.float32)
