"""CQL: "Conservative Q-Learning for Offline Reinforcement Learning" (continuous actions, CQL(H)).

Kumar, Zhou, Tucker and Levine, NeurIPS 2020 (arXiv 2006.04779). `# Eq. N` tags use the CQL paper's numbering;
"SAC Eq. N" the SAC paper's (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications", arXiv
1812.05905). The code follows corl-team/CORL @eeeeef2 `algorithms/offline/cql.py` (itself a port of
young-geng/CQL @934b0e8): `TrainConfig` and configs/offline/cql/hopper/*.yaml (values), `TanhGaussianPolicy`,
`FullyConnectedQFunction`, `init_module_weights` (networks), `ContinuousCQL._q_loss` / `train` (the update).

Reads top to bottom: the networks, `prepare` (state statistics, optional reward normalisation), `act`, then
`update`. The run loop owns the dataset sampler and the batch size; `Batch.discount` already holds gamma (0 at
a terminal), so there is no gamma here.
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
from common.offline.data import OfflineData, state_statistics
from common.precision import autocast, check_precision

CFG_KEYS = (
    "policy_lr",
    "qf_lr",
    "alpha_lr",
    "cql_alpha_lr",
    "hidden_dim",
    "actor_layers",
    "critic_layers",
    "orthogonal_init",
    "tau",
    "target_update_period",
    "alpha_multiplier",
    "use_automatic_entropy_tuning",
    "target_entropy",
    "backup_entropy",
    "bc_steps",
    "cql_n_actions",
    "cql_importance_sample",
    "cql_lagrange",
    "cql_target_action_gap",
    "cql_temp",
    "cql_alpha",
    "cql_max_target_backup",
    "cql_clip_diff_min",
    "cql_clip_diff_max",
    "log_std_multiplier",
    "log_std_offset",
    "log_std_min",
    "log_std_max",
    "normalize_states",
    "state_norm_eps",
    "normalize_reward",
    "reward_span",
    "reward_scale",
    "reward_bias",
)
ALPHA_PRIME_MAX = 1e6  # cql.py: alpha' = clamp(exp(log alpha'), 0, 1e6)
BC_ACTION_CLIP = 1.0 - 1e-6  # atanh of the dataset action in the BC warm-up (see `log_prob`)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------------
# Networks. cql.py `init_module_weights`: with orthogonal_init, every hidden Linear is orthogonal with gain
# sqrt(2) and zero bias and the last Linear orthogonal with gain 1e-2; without it, the hidden layers keep
# PyTorch's default and the last Linear is Xavier-uniform with gain 1e-2. Both zero the last bias.
# CORL builds the policy with `init_module_weights(self.base_network)`, i.e. *without* the orthogonal flag,
# and both critics with it: we do the same.
# ---------------------------------------------------------------------------------------------------
def init_module_weights_(net: nn.Sequential, orthogonal: bool) -> None:
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if orthogonal:
        for layer in linears[:-1]:
            nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
            nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(linears[-1].weight, gain=1e-2)
    else:
        nn.init.xavier_uniform_(linears[-1].weight, gain=1e-2)
    nn.init.zeros_(linears[-1].bias)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the stable form torch's TanhTransform uses."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class TanhGaussianActor(nn.Module):
    """obs -> [Linear -> ReLU] x 3 -> Linear(2A) = (mean, raw log std); a = tanh(mean + std * eps).

    cql.py `TanhGaussianPolicy`: log std = m * raw + c with two *learned* scalars m (init
    `log_std_multiplier` 1.0) and c (init `log_std_offset` -1.0), clamped to [-20, 2]
    (`ReparameterizedTanhGaussian`); log pi sums over action dimensions the Gaussian log density of the
    pre-tanh sample minus the tanh Jacobian. Deterministic: tanh(mean).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int,
        layers: int,
        log_std_multiplier: float,
        log_std_offset: float,
        log_std_min: float,
        log_std_max: float,
    ) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.net = mlp(obs_dim, [hidden_dim] * layers, 2 * action_dim)
        init_module_weights_(self.net, orthogonal=False)
        self.log_std_multiplier = nn.Parameter(torch.tensor(float(log_std_multiplier)))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_offset)))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(obs).float().split(self.action_dim, dim=-1)
        log_std = (self.log_std_multiplier * raw + self.log_std_offset).clamp(
            self.log_std_min, self.log_std_max
        )
        return mean, log_std

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False, repeat: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log pi(action | obs)); with `repeat` N, obs (B, D) gives (B, N, A) and (B, N)."""
        if repeat is not None:
            obs = obs.unsqueeze(1).repeat_interleave(repeat, dim=1)
        mean, log_std = self._dist(obs)
        std = log_std.exp()
        u = mean if deterministic else mean + std * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / std).pow(2) - log_std - LOG_SQRT_2PI - tanh_log_det(u)).sum(-1)
        return torch.tanh(u), log_prob

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(a | s) of given actions (the BC warm-up): u = atanh(a). cql.py evaluates the *sampled*
        action's log prob here (see the DEVIATION in `update`)."""
        mean, log_std = self._dist(obs)
        u = torch.atanh(action.clamp(-BC_ACTION_CLIP, BC_ACTION_CLIP))
        z = (u - mean) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - LOG_SQRT_2PI - tanh_log_det(u)).sum(-1)


def q_many(critic: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q1, Q2 of obs (B, D) with N actions each (B, N, A): two (B, N) tensors (cql.py `multiple_actions`)."""
    b, n = actions.shape[:2]
    rep = obs.unsqueeze(1).expand(b, n, obs.shape[-1]).reshape(b * n, -1)
    q1, q2 = critic(rep, actions.reshape(b * n, -1))
    return q1.float().reshape(b, n), q2.float().reshape(b, n)


def cql_logsumexp(
    q_rand: torch.Tensor,
    q_data: torch.Tensor,
    q_next: torch.Tensor,
    q_curr: torch.Tensor,
    log_pi_next: torch.Tensor,
    log_pi_curr: torch.Tensor,
    action_dim: int,
    temp: float,
    importance_sample: bool,
) -> torch.Tensor:
    """Eq. 4's log sum_a exp Q(s, a), per state (B,), estimated from N random, N next-policy and N current-
    policy actions (App. F). Importance-sampled: each Q is divided by its proposal density, i.e. Q - log U(a)
    (log U = log 0.5^A on [-1, 1]^A) and Q - log pi(a|s); without it, the dataset action's Q joins them
    (cql.py). Temperature: temp * logsumexp(Q / temp)."""
    if importance_sample:
        random_density = action_dim * math.log(0.5)
        cat = torch.cat([q_rand - random_density, q_next - log_pi_next, q_curr - log_pi_curr], dim=1)
    else:
        cat = torch.cat([q_rand, q_data.unsqueeze(1), q_next, q_curr], dim=1)
    return torch.logsumexp(cat / temp, dim=1) * temp


class CQLAgent:
    """SAC with automatic entropy tuning and the CQL(H) critic regulariser (`common.agent.OfflineAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("CQL", cfg, CFG_KEYS, spec)
        checks = [
            (int(cfg.cql_n_actions) >= 1, f"paper.agent.cql_n_actions={cfg.cql_n_actions} must be >= 1"),
            (float(cfg.cql_temp) > 0, f"paper.agent.cql_temp={cfg.cql_temp} must be positive"),
            (
                int(cfg.target_update_period) >= 1,
                f"paper.agent.target_update_period={cfg.target_update_period} must be >= 1",
            ),
            (int(cfg.bc_steps) >= 0, f"paper.agent.bc_steps={cfg.bc_steps} must be >= 0"),
            (int(cfg.critic_layers) >= 1, f"paper.agent.critic_layers={cfg.critic_layers} must be >= 1"),
            (int(cfg.actor_layers) >= 1, f"paper.agent.actor_layers={cfg.actor_layers} must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        obs_dim, action_dim, hidden = spec.obs_shape[0], spec.action_shape[0], int(cfg.hidden_dim)
        self.action_dim = action_dim
        self.tau = float(cfg.tau)
        self.target_update_period = int(cfg.target_update_period)
        self.alpha_multiplier = float(cfg.alpha_multiplier)
        self.auto_entropy = bool(cfg.use_automatic_entropy_tuning)
        # cql.py train(): target_entropy = -prod(action_space.shape) (SAC's heuristic -dim(A)).
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else float(cfg.target_entropy)
        self.backup_entropy = bool(cfg.backup_entropy)
        self.bc_steps = int(cfg.bc_steps)
        self.n_actions = int(cfg.cql_n_actions)
        self.importance_sample = bool(cfg.cql_importance_sample)
        self.lagrange = bool(cfg.cql_lagrange)
        self.target_action_gap = float(cfg.cql_target_action_gap)
        self.temp = float(cfg.cql_temp)
        self.cql_alpha = float(cfg.cql_alpha)
        self.max_target_backup = bool(cfg.cql_max_target_backup)
        self.clip_diff = (float(cfg.cql_clip_diff_min), float(cfg.cql_clip_diff_max))
        self.normalize_states = bool(cfg.normalize_states)
        self.state_norm_eps = float(cfg.state_norm_eps)
        self.normalize_reward = bool(cfg.normalize_reward)
        self.reward_span = float(cfg.reward_span)
        self.reward_bias_cfg = float(cfg.reward_bias)
        self.reward_scale_cfg = float(cfg.reward_scale)

        self.actor = TanhGaussianActor(
            obs_dim,
            action_dim,
            hidden,
            int(cfg.actor_layers),
            float(cfg.log_std_multiplier),
            float(cfg.log_std_offset),
            float(cfg.log_std_min),
            float(cfg.log_std_max),
        ).to(self.device)
        # Two critics of `critic_layers` (q_n_hidden_layers 3) x 256 ReLU (FullyConnectedQFunction).
        self.critic = TwinQ(obs_dim, action_dim, [hidden] * int(cfg.critic_layers))
        for head in (self.critic.q1, self.critic.q2):
            init_module_weights_(head, orthogonal=bool(cfg.orthogonal_init))
        self.critic.to(self.device)
        self.critic_target = TwinQ(obs_dim, action_dim, [hidden] * int(cfg.critic_layers)).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())  # deepcopy in ContinuousCQL
        self.critic_target.requires_grad_(False)
        # log alpha starts at 0 (Scalar(0.0)); log alpha' at 1 (Scalar(1.0)).
        self.log_alpha = nn.Parameter(torch.zeros((), device=self.device))
        self.log_alpha_prime = nn.Parameter(torch.ones((), device=self.device))
        # Adam: policy 3e-5, each critic 3e-4 (one Adam over both is the same per-parameter update), alpha
        # at the policy lr, alpha' at the critic lr (ContinuousCQL.__init__).
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=float(cfg.policy_lr))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=float(cfg.qf_lr))
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=float(cfg.alpha_lr))
        self.alpha_prime_opt = torch.optim.Adam([self.log_alpha_prime], lr=float(cfg.cql_alpha_lr))

        # Dataset statistics, set by `prepare` (identity until then) and saved with the checkpoint.
        self.obs_mean = torch.zeros(obs_dim, device=self.device)
        self.obs_std = torch.ones(obs_dim, device=self.device)
        self.reward_scale = 1.0
        self.reward_bias = 0.0
        self.total_it = 0  # ContinuousCQL.total_it: counts updates from 1, drives bc_steps

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Dataset statistics (cql.py train()): states s <- (s - mean) / (std + 1e-3) (`normalize` True,
    # `compute_mean_std`), for training and evaluation. Rewards only with `normalize_reward`
    # (`modify_reward`; CORL's hopper-medium config turns it on, every other hopper config off):
    # r <- r * 1000 / (max - min episode return) * reward_scale + reward_bias.
    # -----------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        if self.normalize_states:
            mean, std = state_statistics(data.observations, self.state_norm_eps)
            self.obs_mean = torch.as_tensor(mean, device=self.device)
            self.obs_std = torch.as_tensor(std, device=self.device)
        if self.normalize_reward:
            returns = data.episode_returns()
            span = float(returns.max() - returns.min())
            if not np.isfinite(span) or span <= 0.0:
                raise ConfigError(
                    f"CQL reward normalisation needs episodes with different returns, but all {len(returns)} "
                    f"episode(s) return {returns.max():.4g}; set paper.agent.normalize_reward=false"
                )
            self.reward_scale = self.reward_span / span * self.reward_scale_cfg
            self.reward_bias = self.reward_bias_cfg

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    # -----------------------------------------------------------------------------------------------
    # Acting (TanhGaussianPolicy.act): evaluation acts with tanh(mean) (eval_actor puts the actor in eval
    # mode, so `deterministic = not training`); otherwise a sample.
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0))
        with self._autocast():
            action, _ = self.actor(obs_t, deterministic=eval_mode)
        return action[0].float().cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (ContinuousCQL.train): every loss is built from the networks *before* this update's steps,
    # then alpha, the actor and the critics step in that order, then the target critics.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        self.total_it += 1
        b = batch.to_torch(self.device)
        obs, next_obs = self.normalize(b["obs"].float()), self.normalize(b["next_obs"].float())
        action, discount = b["action"].float(), b["discount"].float().squeeze(-1)
        reward = (b["reward"].float() * self.reward_scale + self.reward_bias).squeeze(-1)

        # SAC Eq. 18: J(alpha) = E[-log alpha * (log pi(a|s) + target entropy)], a ~ pi (cql.py optimises
        # log alpha itself); alpha = exp(log alpha) * alpha_multiplier.
        with self._autocast():
            new_action, log_pi = self.actor(obs)
        if self.auto_entropy:
            alpha_loss = -(self.log_alpha * (log_pi + self.target_entropy).detach()).mean()
            alpha = self.log_alpha.exp().detach() * self.alpha_multiplier
        else:
            alpha_loss = torch.zeros((), device=self.device)
            alpha = torch.tensor(self.alpha_multiplier, device=self.device)

        # SAC Eq. 7: J(pi) = E[alpha log pi(a|s) - min(Q1, Q2)(s, a)], a = tanh(mean + std eps) (reparam.).
        # During the first `bc_steps` updates (0 for every hopper config) -log pi(a_data|s) replaces -Q.
        # The critics are frozen for this pass (cql.py lets them collect gradients that their zero_grad
        # discards before the critic step: the same parameters result).
        self.critic.requires_grad_(False)
        if self.total_it <= self.bc_steps:
            # DEVIATION: cql.py's `TanhGaussianPolicy.log_prob` feeds the dataset action to its own sampler
            # and so returns the log prob of a *fresh sample*, not of a_data (its forward ignores the action).
            # We evaluate log pi(a_data|s), the behaviour-cloning term the comment "BC steps" intends.
            with self._autocast():
                target_term = self.actor.log_prob(obs, action)
        else:
            with self._autocast():
                q1_pi, q2_pi = self.critic(obs, new_action)
            target_term = torch.min(q1_pi, q2_pi).float().squeeze(-1)
        self.critic.requires_grad_(True)
        policy_loss = (alpha * log_pi - target_term).mean()

        # Soft Bellman target (Eq. 4's second term, SAC Eq. 5 without the entropy bonus: backup_entropy
        # false): y = r + gamma (1 - d) min(Q1', Q2')(s', a'), a' ~ pi(s'); with cql_max_target_backup,
        # the max over N sampled a' of min(Q1', Q2').
        with torch.no_grad(), self._autocast():
            if self.max_target_backup:
                next_actions, next_log_pis = self.actor(next_obs, repeat=self.n_actions)
                tq1, tq2 = q_many(self.critic_target, next_obs, next_actions)
                target_q, best = torch.min(tq1, tq2).max(dim=-1)
                next_log_pi = next_log_pis.gather(-1, best.unsqueeze(-1)).squeeze(-1)
            else:
                next_action, next_log_pi = self.actor(next_obs)
                tq1, tq2 = self.critic_target(next_obs, next_action)
                target_q = torch.min(tq1, tq2).float().squeeze(-1)
            if self.backup_entropy:
                target_q = target_q - alpha * next_log_pi
            td_target = reward + discount * target_q.float()
        with self._autocast():
            q1, q2 = self.critic(obs, action)
        q1, q2 = q1.float().squeeze(-1), q2.float().squeeze(-1)
        qf1_loss, qf2_loss = F.mse_loss(q1, td_target), F.mse_loss(q2, td_target)

        # Eq. 4, CQL(H): alpha_cql * E_s[log sum_a exp Q(s, a) - Q(s, a_data)] for each critic. The
        # log-sum-exp uses N = 10 actions from each proposal: uniform on [-1, 1]^A, pi(.|s) and pi(.|s')
        # (both evaluated at s), all detached (App. F; cql.py).
        with torch.no_grad(), self._autocast():
            rand_actions = torch.empty(obs.shape[0], self.n_actions, self.action_dim, device=self.device)
            rand_actions.uniform_(-1.0, 1.0)
            curr_actions, log_pi_curr = self.actor(obs, repeat=self.n_actions)
            next_actions, log_pi_next = self.actor(next_obs, repeat=self.n_actions)
        with self._autocast():
            q1_rand, q2_rand = q_many(self.critic, obs, rand_actions)
            q1_curr, q2_curr = q_many(self.critic, obs, curr_actions)
            q1_next, q2_next = q_many(self.critic, obs, next_actions)
        log_pi_curr, log_pi_next = log_pi_curr.float(), log_pi_next.float()
        lse1 = cql_logsumexp(
            q1_rand, q1, q1_next, q1_curr, log_pi_next, log_pi_curr, self.action_dim, self.temp,
            self.importance_sample,
        )  # fmt: skip
        lse2 = cql_logsumexp(
            q2_rand, q2, q2_next, q2_curr, log_pi_next, log_pi_curr, self.action_dim, self.temp,
            self.importance_sample,
        )  # fmt: skip
        diff1 = torch.clamp(lse1 - q1, *self.clip_diff).mean()
        diff2 = torch.clamp(lse2 - q2, *self.clip_diff).mean()

        if self.lagrange:
            # App. F, CQL-Lagrange: max_{alpha' >= 0} alpha' (E[lse - Q] - tau), tau = cql_target_action_gap;
            # the critic term is alpha' * alpha_cql * (diff - tau), alpha' = clamp(exp(log alpha'), 0, 1e6),
            # its value before this update's step (cql.py steps alpha' first, then the critics).
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, ALPHA_PRIME_MAX)
            gap1 = self.cql_alpha * (diff1.detach() - self.target_action_gap)
            gap2 = self.cql_alpha * (diff2.detach() - self.target_action_gap)
            alpha_prime_loss = -0.5 * alpha_prime * (gap1 + gap2)
            alpha_prime = alpha_prime.detach()
            cql1 = alpha_prime * self.cql_alpha * (diff1 - self.target_action_gap)
            cql2 = alpha_prime * self.cql_alpha * (diff2 - self.target_action_gap)
        else:
            alpha_prime = torch.zeros((), device=self.device)
            alpha_prime_loss = torch.zeros((), device=self.device)
            cql1, cql2 = self.cql_alpha * diff1, self.cql_alpha * diff2
        critic_loss = qf1_loss + qf2_loss + cql1 + cql2

        # Steps, in cql.py's order: alpha', alpha, actor, critics; then Polyak targets every period.
        if self.lagrange:
            self.alpha_prime_opt.zero_grad(set_to_none=True)
            alpha_prime_loss.backward()
            self.alpha_prime_opt.step()
        if self.auto_entropy:
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        self.actor_opt.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.actor_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if self.total_it % self.target_update_period == 0:
            soft_update_(self.critic_target, self.critic, self.tau)

        with torch.no_grad():
            scalars = {
                "batch_reward": reward.mean(),  # after normalisation
                "policy_loss": policy_loss,
                "log_pi": log_pi.mean(),
                "alpha": alpha,
                "alpha_loss": alpha_loss,
                "critic_loss": critic_loss,
                "qf1_loss": qf1_loss,
                "q": q1.mean(),
                "target_q": target_q.mean(),
                "cql_diff": diff1,
                "cql_loss": cql1,
                "cql_q_rand": q1_rand.mean(),
                "cql_q_curr": q1_curr.mean(),
                "alpha_prime": alpha_prime,
            }
            values = torch.stack([s.reshape(()).float() for s in scalars.values()]).tolist()  # one sync
        return dict(zip(scalars, values, strict=True))

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "alpha_opt": self.alpha_opt,
            "alpha_prime_opt": self.alpha_prime_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state.update(
            log_alpha=self.log_alpha.detach().clone(),
            log_alpha_prime=self.log_alpha_prime.detach().clone(),
            obs_mean=self.obs_mean.clone(),
            obs_std=self.obs_std.clone(),
            reward_scale=self.reward_scale,
            reward_bias=self.reward_bias,
            total_it=self.total_it,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = (
            "log_alpha",
            "log_alpha_prime",
            "obs_mean",
            "obs_std",
            "reward_scale",
            "reward_bias",
            "total_it",
        )
        load_parts(self._parts(), state, "CQL", extra=extra)
        with torch.no_grad():  # in place: the optimisers hold these very parameters
            self.log_alpha.copy_(torch.as_tensor(state["log_alpha"]))
            self.log_alpha_prime.copy_(torch.as_tensor(state["log_alpha_prime"]))
        self.obs_mean = torch.as_tensor(state["obs_mean"], device=self.device).clone()
        self.obs_std = torch.as_tensor(state["obs_std"], device=self.device).clone()
        self.reward_scale = float(state["reward_scale"])
        self.reward_bias = float(state["reward_bias"])
        self.total_it = int(state["total_it"])
