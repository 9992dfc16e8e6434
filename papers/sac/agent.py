"""Soft Actor-Critic: "Soft Actor-Critic Algorithms and Applications".

Haarnoja, Zhou, Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel, Levine, 2018 (arXiv 1812.05905).
`# Eq. N` tags use that paper's numbering (v2); "App. C" is the tanh change of variables of Appendix C
of arXiv 1801.01290 (repeated in 1812.05905). The code follows what SynthER's online SAC baseline runs:
conglu1997/SynthER @e6835a5 `config/online/sac.gin` + `synther/online/online_exp.py` (`redq_sac`), which
drive watchernyu/REDQ @7b5d1bf `redq/algos/redq_sac.py` (`REDQSACAgent`, num_Q=2, num_min=2 = SAC) and
`redq/algos/core.py` (`TanhGaussianPolicy`, `Mlp`, `weights_init_`).

Reads top to bottom: the networks, `act`, then `update`. The run loop owns seed frames, update frequency,
batch size and the replay; `Batch.discount` already holds gamma (0 at a terminal), so there is no gamma here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from common.agent import check_state_control
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks import TwinQ, mlp, soft_update_
from common.precision import autocast, check_precision

CFG_KEYS = (
    "lr",
    "hidden_dim",
    "critic_target_tau",
    "init_temperature",
    "target_entropy",
    "log_std_min",
    "log_std_max",
    "actor_q",
    "num_expl_steps",
    "actor_update_every",
    "updates_per_step",
)
ACTION_BOUND_EPSILON = 1e-6  # REDQ core.py: inside log(1 - tanh(u)^2 + eps)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def xavier_init_(module: nn.Module) -> None:
    """REDQ core.py `weights_init_`: Linear weights Xavier-uniform (gain 1), biases 0; for `net.apply`."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight, gain=1.0)
        nn.init.constant_(module.bias, 0.0)


def squashed_gaussian(
    mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(u), u = mean + std * noise (reparameterised, Eq. 8); returns (a, log pi(a|s)) of shape (B, 1).

    App. C: log pi(a|s) = sum_i [log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2 + eps)].
    """
    if noise is None:
        noise = torch.randn_like(mean)
    u = mean + log_std.exp() * noise
    action = torch.tanh(u)
    gaussian_log_prob = (
        -0.5 * noise.pow(2) - log_std - LOG_SQRT_2PI
    )  # log N(u; mean, std), (u-mean)/std = noise
    log_prob = gaussian_log_prob - torch.log(1.0 - action.pow(2) + ACTION_BOUND_EPSILON)
    return action, log_prob.sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------
# Networks (REDQ core.py: TanhGaussianPolicy, Mlp). Twin critics are common.networks.TwinQ.
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """obs -> [Linear -> ReLU] x 2 -> (mean, log_std) heads; log_std clamped to [log_std_min, log_std_max]."""

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_dim: int, log_std_min: float, log_std_max: float
    ) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, [hidden_dim], hidden_dim, output_activation=nn.ReLU)
        self.mean = nn.Linear(hidden_dim, action_dim)
        self.log_std = nn.Linear(hidden_dim, action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.apply(xavier_init_)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        # REDQ core.py clamps log_std (LOG_SIG_MIN -20, LOG_SIG_MAX 2); no tanh rescaling of log_std.
        log_std = self.log_std(h).float().clamp(self.log_std_min, self.log_std_max)
        return self.mean(h).float(), log_std  # fp32 distribution parameters even under bf16 autocast


class SACAgent:
    """SAC with twin critics, automatic temperature and a tanh-Gaussian actor (see `common.agent.Agent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("SAC", cfg, CFG_KEYS, spec)
        if cfg.actor_q not in ("mean", "min"):
            raise ConfigError(f"paper.agent.actor_q={cfg.actor_q!r} must be 'mean' or 'min'")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.critic_target_tau = float(cfg.critic_target_tau)
        self.num_expl_steps = int(cfg.num_expl_steps)
        # REDQ policy_update_delay: of the `updates_per_step` updates made at each env step, the actor and
        # the temperature learn on the k-th, 2k-th, ... and always on the last (redq_sac.py `train`:
        # `(i_update + 1) % policy_update_delay == 0 or i_update == num_update - 1`); the critics on every
        # one. SynthER's UTD-20 runs: k = 20, once per env step.
        self.actor_update_every = int(cfg.actor_update_every)
        self.updates_per_step = int(cfg.updates_per_step)
        if self.actor_update_every < 1 or self.updates_per_step < 1:
            raise ConfigError(
                f"paper.agent.actor_update_every={self.actor_update_every} and updates_per_step="
                f"{self.updates_per_step} must be >= 1"
            )
        self.num_updates = 0  # updates so far; the loop makes them in groups of updates_per_step
        self.actor_q = str(cfg.actor_q)
        self.action_shape = tuple(spec.action_shape)
        obs_dim, action_dim, hidden = spec.obs_shape[0], self.action_shape[0], int(cfg.hidden_dim)
        # Target entropy H = -|A|: SynthER online_exp.py `__main__` passes target_entropy='auto', which
        # REDQ redq_sac.py turns into -act_dim. null here means that default.
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)

        self.actor = Actor(obs_dim, action_dim, hidden, float(cfg.log_std_min), float(cfg.log_std_max))
        self.actor.to(self.device)
        self.critic = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic.apply(xavier_init_)
        self.critic_target = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        # REDQ starts log_alpha at 0 (alpha = 1): init_temperature 1.0.
        self.log_alpha = torch.tensor(
            math.log(float(cfg.init_temperature)), device=self.device
        ).requires_grad_()

        lr = float(cfg.lr)  # one Adam lr for actor, critics and temperature (REDQ: lr=3e-4)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Acting (REDQ redq_sac.py: get_exploration_action, get_test_action)
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        if not eval_mode and step < self.num_expl_steps:
            # REDQ samples env.action_space (uniform in the env's box) until start_steps transitions are
            # stored; our envs take actions in [-1, 1], so U(-1, 1).
            return torch.empty(self.action_shape).uniform_(-1.0, 1.0).numpy()
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        with self._autocast():
            mean, log_std = self.actor(obs_t)
        action = torch.tanh(mean) if eval_mode else squashed_gaussian(mean, log_std)[0]
        return action[0].cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (REDQ redq_sac.py: train, get_redq_q_target_no_grad). As there, the critic, actor and
    # temperature gradients are all taken at the current parameters, then every optimizer steps.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        obs, action, next_obs = b["obs"].float(), b["action"].float(), b["next_obs"].float()
        reward, discount = b["reward"].float(), b["discount"].float()
        alpha = self.log_alpha.detach().exp()  # this update's temperature, as REDQ's self.alpha

        # Eq. 3  V(s') = min(Q1', Q2')(s', a') - alpha * log pi(a'|s'),  a' ~ pi(.|s'), target critics.
        # Eq. 2  y = r + gamma * V(s')  (discount = gamma, or 0 at a true terminal).
        with torch.no_grad():
            with self._autocast():
                next_mean, next_log_std = self.actor(next_obs)
            next_action, next_log_prob = squashed_gaussian(next_mean, next_log_std)
            with self._autocast():
                target_q1, target_q2 = self.critic_target(next_obs, next_action)
            next_v = torch.min(target_q1, target_q2).float() - alpha * next_log_prob
            target_q = reward + discount * next_v

        # Eq. 5  J_Q = (Q1(s, a) - y)^2 + (Q2(s, a) - y)^2, batch mean.
        # DEVIATION: no 1/2 factor (REDQ: mse over both heads x num_Q); an lr rescaling under Adam: none.
        with self._autocast():
            q1, q2 = self.critic(obs, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()

        i_update = self.num_updates % self.updates_per_step  # its place among this env step's updates
        self.num_updates += 1
        scalars: dict[str, torch.Tensor] = {
            "batch_reward": reward.mean(),
            "critic_loss": critic_loss,
            "q": q1.mean(),
            "q2": q2.mean(),
            "target_q": target_q.mean(),
            "alpha": alpha,  # the temperature this update used
        }
        if (i_update + 1) % self.actor_update_every == 0 or i_update == self.updates_per_step - 1:
            # Eq. 9  J_pi = alpha * log pi(a|s) - Q(s, a),  a = tanh(mean + std * eps) (Eq. 8, App. C).
            # Q = mean of the twin critics (REDQ `ave_q`), or their min (Haarnoja et al.): `actor_q`.
            # The critics are frozen for this pass so their gradients stay those of J_Q.
            with self._autocast():
                mean, log_std = self.actor(obs)
            pi_action, log_prob = squashed_gaussian(mean, log_std)
            self.critic.requires_grad_(False)
            with self._autocast():
                pi_q1, pi_q2 = self.critic(obs, pi_action)
            self.critic.requires_grad_(True)
            pi_q1, pi_q2 = pi_q1.float(), pi_q2.float()
            pi_q = (pi_q1 + pi_q2) / 2 if self.actor_q == "mean" else torch.min(pi_q1, pi_q2)
            actor_loss = (alpha * log_prob - pi_q).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()

            # Eq. 18  J(alpha) = E[-alpha * (log pi(a|s) + H)], H = target entropy.
            # DEVIATION: differentiated w.r.t. log(alpha) with log(alpha) in place of alpha, as REDQ and
            # softlearning do: same sign of the gradient (alpha falls when entropy is above the target), no
            # constraint alpha > 0 to enforce.
            alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()

            self.critic_opt.step()
            self.actor_opt.step()
            self.alpha_opt.step()
            scalars.update(actor_loss=actor_loss, entropy=-log_prob.mean(), alpha_loss=alpha_loss)
        else:
            self.critic_opt.step()

        # Target critics: theta' <- tau * theta + (1 - tau) * theta' (REDQ polyak 0.995 = 1 - tau).
        soft_update_(self.critic_target, self.critic, self.critic_target_tau)

        with torch.no_grad():  # one device sync for every scalar
            values = torch.stack([v.detach().reshape(()).float() for v in scalars.values()]).tolist()
        return dict(zip(scalars, values, strict=True))

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "alpha_opt": self.alpha_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state["log_alpha"] = self.log_alpha.detach().clone()
        state["num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "SAC", extra=("log_alpha",))
        self.num_updates = int(state.get("num_updates", 0))  # checkpoints before the delay knob: 0
        with torch.no_grad():  # in place: alpha_opt holds this very tensor
            self.log_alpha.copy_(torch.as_tensor(state["log_alpha"]).reshape(()))
