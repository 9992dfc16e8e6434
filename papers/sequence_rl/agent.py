"""Sequence RL (SRL): Patel & Siegelmann, "Overcoming Slow Decision Frequencies in Continuous Control:
Model-Based Sequence Reinforcement Learning for Model-Free Control", ICLR 2025 (arXiv 2410.08979).

One decision = J actions from one state. Three learners, all on primitive (one env step) transitions:
  * a twin soft critic Q(s, a) of single actions, trained as in SAC (Sec. 4);
  * a one-step dynamics model s' = m(s, a), trained by regression (Sec. 4);
  * a GRU actor: the state sets the GRU's initial hidden state, each step's input is the previous action and
    its output a tanh-Gaussian action. "Temporal recall" (Sec. 4): the target model rolls the state forward
    along the sampled sequence, s_0 = s, s_{j+1} = m'(s_j, a_j), and action j is scored by Q(s_j, a_j).
After training the actor acts alone (no model), J actions per decision; it can emit any length (fas.py).

Every fact: dee0512/Sequence-Reinforcement-Learning @c2165d9 scripts/sac.py (`SACGRU` default path:
bp_through_time=False, time_aware_critic=False; `GaussianPolicyGRU`; `Model`; `QNetwork`). `# Eq. N` are
the SAC equations of Haarnoja et al. 2018 (arXiv 1812.05905), as in papers/sac/agent.py; the SRL loss is
tagged "SRL actor loss". The run loop (loop.py) owns exploration frames, update counts and the replay.
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

CFG_KEYS = (
    "interval",
    "lr",
    "hidden_dim",
    "model_hidden_dims",
    "tau",
    "init_temperature",
    "target_entropy",
    "log_std_min",
    "log_std_max",
    "num_expl_frames",
)
ACTION_BOUND_EPSILON = 1e-6  # sac.py `epsilon`, inside log(1 - tanh(u)^2 + eps)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def xavier_init_(module: nn.Module) -> None:
    """sac.py `weights_init_`: Linear weights Xavier-uniform (gain 1), biases 0 (the GRU cell keeps
    PyTorch's own init, as upstream)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight, gain=1.0)
        nn.init.constant_(module.bias, 0.0)


class SequenceActor(nn.Module):
    """GaussianPolicyGRU: h_0 = W2 relu(W1 s) (no activation on the second layer), then for each j
    h_{j+1} = GRU(a_{j-1}, h_j), a_j = tanh(mean(h_{j+1}) + std(h_{j+1}) * eps) (Eq. 8 and the tanh change of
    variables of App. C of arXiv 1801.01290). a_{-1} is the action executed before s (zeros at an episode
    start); each next input is the sampled action (the tanh of the mean when deterministic), with its
    gradient."""

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_dim: int, log_std_min: float, log_std_max: float
    ) -> None:
        super().__init__()
        self.encoder = mlp(obs_dim, [hidden_dim], hidden_dim)  # Linear-ReLU-Linear
        self.gru = nn.GRUCell(action_dim, hidden_dim)
        self.mean = nn.Linear(hidden_dim, action_dim)
        self.log_std = nn.Linear(hidden_dim, action_dim)
        self.action_dim = action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        for part in (self.encoder, self.mean, self.log_std):
            part.apply(xavier_init_)

    def forward(
        self, state: torch.Tensor, previous: torch.Tensor, length: int, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`length` actions per state, after the action `previous`: (B, length, A) in [-1, 1] and their
        log-probabilities (B, length, 1), each given the actions before it (zeros when deterministic)."""
        h = self.encoder(state)
        actions, log_probs = [], []
        for _ in range(length):
            h = self.gru(previous, h)
            mean = self.mean(h)
            log_std = self.log_std(h).clamp(self.log_std_min, self.log_std_max)
            if deterministic:
                action, log_prob = torch.tanh(mean), torch.zeros_like(mean[:, :1])
            else:
                noise = torch.randn_like(mean)
                action = torch.tanh(mean + log_std.exp() * noise)
                gaussian = -0.5 * noise.pow(2) - log_std - LOG_SQRT_2PI  # log N(u; mean, std)
                log_prob = (gaussian - torch.log(1.0 - action.pow(2) + ACTION_BOUND_EPSILON)).sum(
                    -1, keepdim=True
                )
            actions.append(action)
            log_probs.append(log_prob)
            previous = action
        return torch.stack(actions, 1), torch.stack(log_probs, 1)


def recall_states(model: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Temporal recall: the states at which each action of the sequences runs, (B, J, obs_dim):
    s_0 = obs, s_{j+1} = model(s_j, a_j). No gradient flows into the states (upstream rolls the target
    model under no_grad): each action is credited only through its own Q(s_j, a_j)."""
    with torch.no_grad():
        states, s = [obs], obs
        for j in range(actions.shape[1] - 1):
            s = model(torch.cat([s, actions[:, j].detach()], -1))
            states.append(s)
    return torch.stack(states, 1)


class SRLAgent:
    """SRL (see the module docstring). Observations are ``concat(state, previous action)`` (loop.py
    `Decisions`); `act` returns a decision, the flat concatenation of J actions; `update` takes primitive
    transitions (obs = [s, a_prev], action = a, next_obs = [s', a])."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("SRL", cfg, CFG_KEYS, spec)
        if precision != "fp32":
            raise ConfigError(f"sequence_rl runs in fp32 only, got precision={precision}; set precision=fp32")
        self.interval = int(cfg.interval)
        if spec.action_shape[0] % self.interval:
            raise ConfigError(
                f"SRL: a decision's action shape {spec.action_shape} is not paper.interval={self.interval} "
                f"actions; build the env with DecisionInterval(env, paper.interval)"
            )
        self.device = torch.device(device)
        self.tau = float(cfg.tau)
        self.decision_shape = tuple(spec.action_shape)
        self.action_dim = spec.action_shape[0] // self.interval
        # Uniform random decisions while fewer than num_expl_frames env steps were taken (start_timesteps).
        self.num_expl_steps = int(cfg.num_expl_frames) // self.interval
        self.state_dim = spec.obs_shape[0] - self.action_dim
        if self.state_dim < 1:
            raise ConfigError(
                f"SRL observes concat(state, previous action); obs_shape {spec.obs_shape} is too short for "
                f"{self.action_dim}-D actions: build the env with papers.sequence_rl.loop.Decisions"
            )
        obs_dim, hidden = self.state_dim, int(cfg.hidden_dim)
        self.target_entropy = (
            -float(self.action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        )

        self.actor = SequenceActor(
            obs_dim, self.action_dim, hidden, float(cfg.log_std_min), float(cfg.log_std_max)
        ).to(self.device)
        self.critic = TwinQ(obs_dim, self.action_dim, [hidden, hidden]).to(self.device)
        self.critic.apply(xavier_init_)
        self.critic_target = TwinQ(obs_dim, self.action_dim, [hidden, hidden]).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        # Model: [s, a] -> 400 -> 300 -> s' (ReLU), the next state itself (not a difference).
        self.model = mlp(obs_dim + self.action_dim, list(cfg.model_hidden_dims), obs_dim).to(self.device)
        self.model.apply(xavier_init_)
        self.model_target = mlp(obs_dim + self.action_dim, list(cfg.model_hidden_dims), obs_dim)
        self.model_target.to(self.device).load_state_dict(self.model.state_dict())
        self.model_target.requires_grad_(False)
        self.log_alpha = torch.tensor(
            math.log(float(cfg.init_temperature)), device=self.device
        ).requires_grad_()

        lr = float(cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)

    # -----------------------------------------------------------------------------------------------
    # Acting: one decision = `interval` actions from one state, executed open loop.
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act_sequence(self, obs: np.ndarray, length: int, eval_mode: bool) -> np.ndarray:
        """`length` actions from `obs` = [state, previous action], flat (length * action_dim,): the means
        when `eval_mode` (select_action(evaluate=True)), else samples."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        state, previous = obs_t.split([self.state_dim, self.action_dim], -1)
        actions, _ = self.actor(state, previous, length, deterministic=eval_mode)
        return actions[0].reshape(-1).cpu().numpy()

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        if not eval_mode and step < self.num_expl_steps:
            return torch.empty(self.decision_shape).uniform_(-1.0, 1.0).numpy()
        return self.act_sequence(obs, self.interval, eval_mode)

    # -----------------------------------------------------------------------------------------------
    # Learning (SACGRU.update_parameters): critic, then model, then actor and temperature, then targets.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        split = [self.state_dim, self.action_dim]
        obs, previous = b["obs"].float().split(split, -1)  # s and the action executed before it
        next_obs, next_previous = b["next_obs"].float().split(split, -1)  # s' and a
        action, reward, discount = b["action"].float(), b["reward"].float(), b["discount"].float()
        alpha = self.log_alpha.detach().exp()

        # Eq. 3  V(s') = min(Q1', Q2')(s', a') - alpha log pi(a'|s'), a' the first action of pi(s') after a.
        # Eq. 2  y = r + gamma V(s') (discount = gamma, 0 at a terminal). One primitive step.
        with torch.no_grad():
            next_action, next_log_prob = self.actor(next_obs, next_previous, 1)
            target_q1, target_q2 = self.critic_target(next_obs, next_action[:, 0])
            target_q = reward + discount * (torch.min(target_q1, target_q2) - alpha * next_log_prob[:, 0])
        # Eq. 5  J_Q = MSE(Q1(s, a), y) + MSE(Q2(s, a), y).
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Model: J_m = MSE(m(s, a), s') on primitive transitions.
        # DEVIATION: the same batch as the critic's; upstream samples a second batch for the model and actor.
        model_loss = F.mse_loss(self.model(torch.cat([obs, action], -1)), next_obs)
        self.model_opt.zero_grad(set_to_none=True)
        model_loss.backward()
        self.model_opt.step()

        # SRL actor loss (temporal recall): sum_j E[alpha log pi(a_j | s, a_<j) - min(Q1, Q2)(s_j, a_j)],
        # s_j from the target model (`recall_states`), Q the current critics (frozen for this pass).
        actions, log_probs = self.actor(obs, previous, self.interval)
        states = recall_states(self.model_target, obs, actions)
        flat = (-1, actions.shape[-1])
        self.critic.requires_grad_(False)
        pi_q1, pi_q2 = self.critic(states.reshape(-1, states.shape[-1]), actions.reshape(flat))
        self.critic.requires_grad_(True)
        pi_q = torch.min(pi_q1, pi_q2).reshape(obs.shape[0], self.interval, 1)
        actor_loss = (alpha * log_probs - pi_q).mean(0).sum()  # batch mean per position, summed over j
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Eq. 18  J(alpha) = E[-log_alpha (mean_j log pi(a_j) + H)], H = -action_dim (SACGRU: log_pi.mean(1)).
        alpha_loss = -(self.log_alpha * (log_probs.detach().mean(1) + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        # Targets every update (target_update_interval 1): critics and model, Polyak tau.
        soft_update_(self.critic_target, self.critic, self.tau)
        soft_update_(self.model_target, self.model, self.tau)

        scalars = {
            "batch_reward": reward.mean(),
            "critic_loss": critic_loss,
            "q": q1.mean(),
            "target_q": target_q.mean(),
            "model_loss": model_loss,
            "actor_loss": actor_loss,
            "entropy": -log_probs.mean(),
            "alpha": alpha,
            "alpha_loss": alpha_loss,
        }
        with torch.no_grad():
            values = torch.stack([v.detach().reshape(()).float() for v in scalars.values()]).tolist()
        return dict(zip(scalars, values, strict=True))

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors and numbers only (weights_only loads).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "model": self.model,
            "model_target": self.model_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "model_opt": self.model_opt,
            "alpha_opt": self.alpha_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state["log_alpha"] = self.log_alpha.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "SRL", extra=("log_alpha",))
        with torch.no_grad():  # in place: alpha_opt holds this very tensor
            self.log_alpha.copy_(torch.as_tensor(state["log_alpha"]).reshape(()))
