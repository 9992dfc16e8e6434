"""DQN: "Human-level control through deep reinforcement learning" (Mnih et al., Nature 2015), with the
options later papers add: n-step returns (Sutton 1988; the replay builds them, `paper.buffer.nstep`),
double Q-learning (van Hasselt, Guez & Silver, AAAI 2016, Eq. 4) and any value loss of
`common.value_losses` (`paper.agent.loss`: Huber as Nature DQN, MSE, or the classification losses of
"Stop Regressing", Farebrother et al., ICML 2024, which `papers/hl_gauss` runs).

Reads top to bottom: the Q-network (torso + a head of `num_outputs` per action), `act` (epsilon-greedy) and
`update`. The run loop (`common.loop.train_online`) owns the replay, the batch size, the seed frames and the
update frequency; `Batch.reward` is the n-step discounted return and `Batch.discount` is gamma^n, or 0 at a
terminal, so gamma never appears here. Defaults: conf/paper/dqn.yaml (MinAtar, Young & Tian 2019) and
conf/paper_env/dqn_*.yaml; every value and deviation is in papers/dqn/README.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks.conv import conv_out_size
from common.precision import autocast, check_precision
from common.value_losses import make_value_loss

NETWORKS = ("minatar", "nature", "mlp")


# ---------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------
def make_torso(kind: str, obs_shape: tuple[int, ...], channel_scale: int) -> tuple[nn.Module, int]:
    """The feature extractor and its output size.

    minatar: one 3x3 stride-1 conv of 16 channels (kenjyoung/MinAtar@4241f24 examples/dqn.py `QNetwork`);
    nature: 32 8x8/4, 64 4x4/2, 64 3x3/1 convs (Mnih et al. 2015, Methods "Model architecture"); mlp: none
    (the observation flattened).
    `channel_scale` multiplies every conv's channels (the scale study of papers/hl_gauss).
    """
    if kind == "mlp":  # any state array (a vector, a symbolic grid) flattened into one vector
        return nn.Flatten(), math.prod(obs_shape)
    if len(obs_shape) != 3:
        raise ConfigError(f"paper.agent.network={kind} needs (C, H, W) observations, got {obs_shape}")
    c, h, w = obs_shape
    layers = [(16, 3, 1)] if kind == "minatar" else [(32, 8, 4), (64, 4, 2), (64, 3, 1)]
    modules: list[nn.Module] = []
    for out, kernel, stride in layers:
        out *= channel_scale
        if min(h, w) < kernel:
            raise ConfigError(f"paper.agent.network={kind} does not fit observations {obs_shape}")
        modules += [nn.Conv2d(c, out, kernel, stride), nn.ReLU()]
        c, h, w = out, conv_out_size(h, kernel, stride), conv_out_size(w, kernel, stride)
    return nn.Sequential(*modules, nn.Flatten()), c * h * w


class QNetwork(nn.Module):
    """obs -> torso -> [Linear -> ReLU] x hidden_layers -> Linear(num_actions x num_outputs).

    Returns (B, num_actions, num_outputs): one scalar (regression) or one set of logits (classification)
    per action. PyTorch's default initialisation, as MinAtar's dqn.py.
    """

    def __init__(
        self,
        kind: str,
        obs_shape: tuple[int, ...],
        num_actions: int,
        num_outputs: int,
        hidden_dim: int,
        hidden_layers: int,
        channel_scale: int,
    ) -> None:
        super().__init__()
        self.torso, size = make_torso(kind, obs_shape, channel_scale)
        hidden: list[nn.Module] = []
        for _ in range(hidden_layers):
            hidden += [nn.Linear(size, hidden_dim), nn.ReLU()]
            size = hidden_dim
        self.hidden = nn.Sequential(*hidden)
        self.head = nn.Linear(size, num_actions * num_outputs)
        self.shape = (num_actions, num_outputs)
        # Atari frames are uint8 0..255 (scaled to [0, 1], Nature DQN); MinAtar channels are 0/1 already.
        self.scale = 1.0 / 255.0 if kind == "nature" else 1.0

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.hidden(self.torso(obs.float() * self.scale))
        return self.head(x).view(-1, *self.shape)


def epsilon_at(step: int, start: float, end: float, warmup: int, decay: int) -> float:
    """1 during the `warmup` steps of uniform actions, then linear from `start` to `end` over `decay` steps
    (MinAtar dqn.py `world_dynamics`; Dopamine `linearly_decaying_epsilon` has the same shape)."""
    if step < warmup:
        return 1.0
    mix = min(1.0, (step - warmup) / max(1, decay))
    return start + mix * (end - start)


# ---------------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------------
class DQNAgent:
    """DQN with a target network, epsilon-greedy acting and a pluggable value loss."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        num_actions = getattr(spec, "num_actions", None)
        if num_actions is None or tuple(spec.action_shape) != ():
            raise ConfigError(
                f"DQN needs a discrete-action env (MinAtar, Atari, MiniGrid, classic control); this env "
                f"has action_shape {tuple(spec.action_shape)}"
            )
        if cfg.network not in NETWORKS:
            raise ConfigError(f"paper.agent.network={cfg.network!r} must be one of {', '.join(NETWORKS)}")
        for key in ("hidden_dim", "channel_scale", "target_update_every"):
            if int(cfg[key]) < 1:
                raise ConfigError(f"paper.agent.{key}={cfg[key]} must be >= 1")
        if int(cfg.hidden_layers) < 0 or float(cfg.target_noise_std) < 0:
            raise ConfigError("paper.agent.hidden_layers and target_noise_std must be >= 0")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.num_actions = int(num_actions)
        self.loss_fn = make_value_loss(cfg)
        self.double_q = bool(cfg.double_q)
        self.target_update_every = int(cfg.target_update_every)
        self.target_noise_std = float(cfg.target_noise_std)
        self.eps = (float(cfg.epsilon_start), float(cfg.epsilon_end))
        self.eps_warmup, self.eps_decay = int(cfg.epsilon_warmup_steps), int(cfg.epsilon_decay_steps)
        self.eps_eval = float(cfg.epsilon_eval)
        self.max_grad_norm = None if cfg.max_grad_norm is None else float(cfg.max_grad_norm)

        def network() -> QNetwork:
            return QNetwork(
                cfg.network,
                tuple(spec.obs_shape),
                self.num_actions,
                self.loss_fn.num_outputs,
                int(cfg.hidden_dim),
                int(cfg.hidden_layers),
                int(cfg.channel_scale),
            ).to(self.device)

        self.q = network()
        self.q_target = network()
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        self.opt = make_optimizer(cfg, self.q.parameters())
        self.num_updates = 0

    def _values(self, net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """Q(s, .) as scalars (B, num_actions), fp32."""
        with autocast(self.device, self.precision):
            out = net(obs)
        return self.loss_fn.value(out.float())

    # -----------------------------------------------------------------------------------------------
    # Acting: epsilon-greedy on the scalar values (uniform actions during the warmup steps)
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        epsilon = self.eps_eval if eval_mode else epsilon_at(step, *self.eps, self.eps_warmup, self.eps_decay)
        # The coin and the random action come from torch's RNG (checkpointed with the run).
        if epsilon > 0 and float(torch.rand(())) < epsilon:
            return np.asarray(int(torch.randint(self.num_actions, ())))
        obs_t = torch.as_tensor(obs, device=self.device).unsqueeze(0)
        return np.asarray(int(self._values(self.q, obs_t).argmax(-1)))

    # -----------------------------------------------------------------------------------------------
    # Learning
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def td_target(self, reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """y = R^(n) + gamma^n Q_target(s', a*) (regression), or its distribution (classification), with
        a* = argmax_a Q_target(s', a) (Nature DQN) or argmax_a Q_online(s', a) (double DQN, Eq. 4); the target
        network evaluates a* either way. `reward` (B,) is the n-step return, `discount` (B,) gamma^n or 0."""
        with autocast(self.device, self.precision):
            next_target_out = self.q_target(next_obs).float()  # (B, A, k)
        chooser = self._values(self.q, next_obs) if self.double_q else self.loss_fn.value(next_target_out)
        next_action = chooser.argmax(-1)
        rows = torch.arange(next_action.numel(), device=next_action.device)
        return self.loss_fn.target(reward, discount, next_target_out[rows, next_action])

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        action = b["action"].long().view(-1)  # the replay stores discrete actions as float32 scalars
        reward, discount = b["reward"].float().view(-1), b["discount"].float().view(-1)
        # Label noise (papers/hl_gauss, noisy-target study): fresh N(0, sigma^2) on each n-step return.
        if self.target_noise_std > 0:
            reward = reward + self.target_noise_std * torch.randn_like(reward)
        target = self.td_target(reward, discount, b["next_obs"])

        rows = torch.arange(action.numel(), device=self.device)
        with autocast(self.device, self.precision):
            out = self.q(b["obs"]).float()[rows, action]  # (B, k) at the actions taken
        loss = self.loss_fn.loss(out, target).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.q.parameters(), self.max_grad_norm)
        self.opt.step()

        # Hard target update every `target_update_every` updates (MinAtar dqn.py counts policy updates).
        self.num_updates += 1
        if self.num_updates % self.target_update_every == 0:
            self.q_target.load_state_dict(self.q.state_dict())

        with torch.no_grad():
            q = self.loss_fn.value(out.detach())
            scalars = torch.stack([loss.detach(), q.mean(), reward.mean()]).tolist()
        return dict(zip(("loss", "q", "batch_reward"), scalars, strict=True))

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors and numbers only
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {"q": self.q, "q_target": self.q_target, "opt": self.opt}

    def state_dict(self) -> dict[str, Any]:
        return {**parts_state(self._parts()), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "DQN", extra=("num_updates",))
        self.num_updates = int(state["num_updates"])


def make_optimizer(cfg: DictConfig, params: Any) -> torch.optim.Optimizer:
    """`rmsprop` (torch's RMSprop: alpha = squared-gradient decay, eps added to the root, optional centring
    and momentum) or `adam`."""
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=float(cfg.lr),
            alpha=float(cfg.rmsprop_alpha),
            eps=float(cfg.optim_eps),
            centered=bool(cfg.rmsprop_centered),
            momentum=float(cfg.rmsprop_momentum),
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=float(cfg.lr), eps=float(cfg.optim_eps))
    raise ConfigError(f"paper.agent.optimizer={cfg.optimizer!r} must be 'rmsprop' or 'adam'")
