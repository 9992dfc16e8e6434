"""DrM: "Mastering Visual Reinforcement Learning through Dormant Ratio Minimization".

Xu, Zheng, Liang, Wang, Yuan, Ji, Luo, Liu, Yuan, Hua, Li, Ze, Daumé III, Huang, Xu, ICLR 2024
(arXiv 2310.19668). Follows XuGW-Kevin/DrM @317116a: `agents/drm.py` (Actor, Critic, VNetwork, DrMAgent),
`utils.py` (cal_dormant_ratio, perturb, weight_init, schedule) and `train_dmc.py` (when update() runs).

DrM is DrQ-v2 (see papers/drqv2/agent.py; the DrQ-v2 parts are copied, not imported) driven by one number,
the actor's dormant ratio beta. Tags used below:
  [beta]     dormant ratio: the fraction of actor units whose mean |activation| < tau * the layer mean
  [perturb]  dormant-ratio-guided perturbation: W <- a*W + (1-a)*W_fresh, a = clip(1 - k*beta, a_min, a_max)
  [awaken]   awaken exploration: sigma = sigmoid(T*(beta - beta_hat)), then max(that, schedule(t - t_awake))
  [exploit]  dormant-ratio-guided exploitation: an expectile V(s), blended into the critic target with
             lambda(beta) = lambda_hat * sigmoid(-T_l*(beta - beta_hat))
  [critic] [actor] [aug]  as in DrQ-v2 (n-step clipped double-Q, DDPG actor on detached features, shifts)

The run loop owns seed frames, the update frequency, batch size, n-step returns and the replay; it calls
`update(batch, step)` every `update_every_steps` agent steps and reads `diagnostics()` at each evaluation.
`Batch.discount` already holds gamma^n (0 at a terminal), so there is no gamma here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from common.augment import RandomShiftsAug
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.diagnostics import module_dormant_ratio
from common.distributions import TruncatedNormal
from common.envs.base import EnvSpec
from common.errors import CheckpointError, ConfigError
from common.networks import PixelEncoder, Trunk, TwinQ, mlp, orthogonal_init_, soft_update_
from common.precision import autocast, check_precision
from common.schedule import Schedule, parse_schedule

# The DrQ-v2 keys, then DrM's (cfgs/agent/drm.yaml; max_perturb_factor and target_lambda are per task).
DRQV2_KEYS = (
    "lr",
    "feature_dim",
    "hidden_dim",
    "critic_target_tau",
    "num_expl_steps",
    "stddev_schedule",
    "stddev_clip",
)
DRM_KEYS = (
    "dormant_threshold",
    "target_dormant_ratio",
    "dormant_temp",
    "lambda_temp",
    "perturb_interval",
    "min_perturb_factor",
    "max_perturb_factor",
    "perturb_rate",
    "expectile",
    "target_lambda",
)
PER_TASK_KEYS = ("max_perturb_factor", "target_lambda")


# ---------------------------------------------------------------------------------------------------
# Networks (agents/drm.py: Actor, Critic, VNetwork). The encoder is common.networks.PixelEncoder.
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """Trunk(repr -> feature) -> MLP(hidden, hidden) -> tanh mean; pi(.|h) = TruncatedNormal(mean, std)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim, [hidden_dim, hidden_dim], action_dim)  # Lin, ReLU, Lin, ReLU, Lin
        self.apply(orthogonal_init_)

    def forward(self, h: torch.Tensor, std: float) -> TruncatedNormal:
        mean = torch.tanh(self.policy(self.trunk(h))).float()  # fp32 distribution even under bf16 autocast
        return TruncatedNormal(mean, torch.full_like(mean, std))

    def dormant_layers(self) -> list[nn.Module]:
        """[beta] The modules whose outputs stand for the actor's 4 layers in DrM's dormant ratio.

        DrM's `utils.cal_dormant_ratio` hooks every nn.Linear and keeps a *reference* to its output, but
        its actor's hidden Linears are followed by ReLU(inplace=True), which overwrites that tensor before
        beta is computed. What the official code effectively measures, and what we reproduce, is:
        trunk Linear (before LayerNorm), hidden layers 1 and 2 *after* their ReLU, last Linear (before
        tanh). Our ReLUs are not in-place, so we read the ReLU modules' outputs for the hidden layers.
        """
        linear1, relu1, _linear2, relu2, last = self.policy
        return [self.trunk[0], relu1, relu2, last]


class Critic(nn.Module):
    """Its own Trunk(repr -> feature), then two Q heads MLP(hidden, hidden) -> 1 on concat(feature, a)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.q = TwinQ(feature_dim, action_dim, [hidden_dim, hidden_dim])
        self.apply(orthogonal_init_)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q(self.trunk(h), action)


class ValueNet(nn.Module):
    """[exploit] V(s): its own Trunk(repr -> feature) -> MLP(hidden, hidden) -> 1 (drm.py VNetwork)."""

    def __init__(self, repr_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.v = mlp(feature_dim, [hidden_dim, hidden_dim], 1)
        self.apply(orthogonal_init_)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.v(self.trunk(h))


# ---------------------------------------------------------------------------------------------------
# DrM's formulas as functions of beta (drm.py: dormant_stddev, stddev, perturb_factor, lambda_,
# update_predictor; utils.py: perturb). Pure, so the tests check them against hand-computed values.
# ---------------------------------------------------------------------------------------------------
def _sigmoid(x: float) -> float:
    """1 / (1 + exp(-x)) without overflow for large |x| (upstream uses math.exp directly)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def perturb_factor(beta: float, rate: float, min_factor: float, max_factor: float) -> float:
    """[perturb] alpha = min(max(min_factor, 1 - rate * beta), max_factor): the share of old weights kept."""
    return min(max(min_factor, 1.0 - rate * beta), max_factor)


def exploration_std(
    beta: float, step: int, awaken_step: int | None, schedule: Schedule, temp: float, target: float
) -> float:
    """[awaken] sigma_b = sigmoid(temp * (beta - target)); once awake, max(sigma_b, schedule(step - awaken)).

    The decay clock of the stddev schedule starts at `awaken_step` (drm.py `stddev_type: awake`).
    """
    sigma_beta = _sigmoid(temp * (beta - target))
    if awaken_step is None:
        return sigma_beta
    return max(sigma_beta, schedule(step - awaken_step))


def exploit_lambda(beta: float, target_lambda: float, temp: float, target: float) -> float:
    """[exploit] lambda = target_lambda / (1 + exp(temp * (beta - target))): the weight of V in the target."""
    return target_lambda * _sigmoid(-temp * (beta - target))


def expectile_loss(v: torch.Tensor, q: torch.Tensor, expectile: float) -> torch.Tensor:
    """[exploit] mean(w * (V - Q)^2) with w = expectile where V <= Q, else 1 - expectile (drm.py vf_weight).

    With expectile > 0.5, V is pulled up towards the upper expectile of Q over the replayed actions.
    """
    err = v - q
    weight = torch.where(err > 0, 1.0 - expectile, expectile)
    return (weight * err.pow(2)).mean()


@torch.no_grad()
def perturb_linear_(
    net: nn.Module, alpha: float, fresh_init: Callable[[nn.Module], None] = orthogonal_init_
) -> None:
    """[perturb] Every nn.Linear of `net`: each parameter p <- alpha * p + (1 - alpha) * p_fresh, in place.

    p_fresh comes from a copy of the layer re-initialised by `fresh_init` (DrQ-v2's orthogonal init, so
    fresh biases are 0 and biases end up scaled by alpha), an independent draw per layer and per call.
    Other modules (convolutions, LayerNorm) are untouched, as in DrM's utils.perturb.
    """
    for module in net.modules():
        if isinstance(module, nn.Linear):
            fresh = copy.deepcopy(module)
            fresh_init(fresh)
            for p, p_fresh in zip(module.parameters(), fresh.parameters(), strict=True):
                p.mul_(alpha).add_(p_fresh, alpha=1.0 - alpha)


class DrMAgent:
    """DrQ-v2 + dormant-ratio-guided perturbation, awaken exploration and exploitation (see `Agent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        # `k in cfg` is False for `???` values too; DrM sets two keys per task (cfgs/task/*.yaml), ours come
        # from conf/paper_env/drm_<env>.yaml and are null where the official configs have no value.
        unset = [k for k in (*DRQV2_KEYS, *DRM_KEYS) if k not in cfg or cfg[k] is None]
        if unset and unset[0] in PER_TASK_KEYS:
            raise ConfigError(
                f"paper.agent.{unset[0]} is not set: DrM sets it per task and the official configs have no "
                f"value for this env; pass paper.agent.{unset[0]}=... (see papers/drm/README.md)"
            )
        if unset:
            raise ConfigError(f"paper.agent is missing {', '.join(unset)}")
        if not spec.pixels or len(spec.obs_shape) != 3:
            raise ConfigError(f"DrM needs pixel observations (C, H, W), got obs_shape {spec.obs_shape}")
        if len(spec.action_shape) != 1:
            raise ConfigError(f"DrM needs a flat action vector, got action_shape {spec.action_shape}")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.lr = float(cfg.lr)
        self.critic_target_tau = float(cfg.critic_target_tau)
        self.num_expl_steps = int(cfg.num_expl_steps)
        self.stddev_schedule = parse_schedule(cfg.stddev_schedule)  # validated at start-up
        self.stddev_clip = float(cfg.stddev_clip)
        self.dormant_threshold = float(cfg.dormant_threshold)  # tau of [beta]
        self.target_dormant_ratio = float(cfg.target_dormant_ratio)  # beta_hat of [awaken] and [exploit]
        self.dormant_temp = float(cfg.dormant_temp)
        self.lambda_temp = float(cfg.lambda_temp)
        self.target_lambda = float(cfg.target_lambda)
        self.perturb_interval = int(cfg.perturb_interval)  # agent steps
        self.min_perturb_factor = float(cfg.min_perturb_factor)
        self.max_perturb_factor = float(cfg.max_perturb_factor)
        self.perturb_rate = float(cfg.perturb_rate)
        self.expectile = float(cfg.expectile)
        if self.perturb_interval < 1:
            raise ConfigError(f"paper.agent.perturb_interval={self.perturb_interval} must be >= 1")
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"paper.agent.expectile={self.expectile} must be in (0, 1)")
        # DEVIATION: min > max is rejected; drm.py's min(max(min, .), max) would silently return max.
        if not 0.0 <= self.min_perturb_factor <= self.max_perturb_factor <= 1.0:
            raise ConfigError(
                f"paper.agent.min_perturb_factor={self.min_perturb_factor} and max_perturb_factor="
                f"{self.max_perturb_factor} must satisfy 0 <= min <= max <= 1"
            )
        self.action_shape = tuple(spec.action_shape)
        feature_dim, hidden_dim = int(cfg.feature_dim), int(cfg.hidden_dim)
        action_dim = self.action_shape[0]

        # Built in drm.py's order (encoder, actor, V, critic, target): init draws in upstream's order.
        self.encoder = PixelEncoder(spec.obs_shape).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.value = ValueNet(repr_dim, feature_dim, hidden_dim).to(self.device)
        self.critic = Critic(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target = Critic(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)

        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=self.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=self.lr)  # drm.py predictor_opt

        self.aug = RandomShiftsAug(pad=4)  # [aug]

        # DrM's state beyond weights (all in state_dict for an exact resume).
        self.dormant_ratio = 1.0  # [beta] of the latest update; drm.py starts it at 1
        self.awaken_step: int | None = None  # [awaken] first update step with beta < beta_hat
        self.perturbations = 0  # [perturb] how many have happened
        self.last_step = 0  # the latest step seen by act/update, for diagnostics()

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    def stddev(self, step: int) -> float:
        """[awaken] The exploration sigma at `step` from the latest beta (acting, target actions, actor loss).

        DEVIATION: drm.py also offers `stddev_type: max` (compares a schedule value with the bound method
        `self.stddev`, a TypeError) and `dormant` (sigma_beta only); every official config uses `awake`,
        the only mode implemented here.
        """
        beta, temp, target = self.dormant_ratio, self.dormant_temp, self.target_dormant_ratio
        return exploration_std(beta, step, self.awaken_step, self.stddev_schedule, temp, target)

    def exploit_lambda(self) -> float:
        """[exploit] lambda(beta) from the latest beta."""
        return exploit_lambda(
            self.dormant_ratio, self.target_lambda, self.lambda_temp, self.target_dormant_ratio
        )

    # -----------------------------------------------------------------------------------------------
    # Acting (drm.py: DrMAgent.act)
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        self.last_step = step
        if not eval_mode and step < self.num_expl_steps:
            # DEVIATION (as papers/drqv2): drm.py runs the networks, samples, then overwrites the action
            # with U(-1, 1); we draw U(-1, 1) directly. Same action distribution, different torch RNG stream.
            return torch.empty(self.action_shape).uniform_(-1.0, 1.0).numpy()
        obs_t = torch.tensor(obs, device=self.device).unsqueeze(0)  # a copy: env arrays may be read-only
        with self._autocast():
            dist = self.actor(self.encoder(obs_t), self.stddev(step))  # [awaken]
        action = dist.mean if eval_mode else dist.sample(clip=None)
        return action[0].float().cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Perturbation (drm.py: DrMAgent.perturb; utils.py: perturb)
    # -----------------------------------------------------------------------------------------------
    def perturb(self) -> float:
        """[perturb] Shrink-and-perturb every Linear of actor, critic, critic target and V; reset all Adams.

        Uses the latest beta. The critic and its target get independent fresh draws, so afterwards the
        target no longer equals the critic (as upstream). drm.py also calls utils.perturb on the encoder:
        it has no Linear, so its weights are unchanged and only its Adam state is cleared (as here).
        """
        alpha = perturb_factor(
            self.dormant_ratio, self.perturb_rate, self.min_perturb_factor, self.max_perturb_factor
        )
        for net in (self.actor, self.critic, self.critic_target, self.value):
            perturb_linear_(net, alpha)
        for opt in (self.actor_opt, self.critic_opt, self.encoder_opt, self.value_opt):
            opt.state.clear()  # Adam moments and step counts restart (utils.perturb: defaultdict(dict))
        self.perturbations += 1
        return alpha

    # -----------------------------------------------------------------------------------------------
    # Learning (drm.py: DrMAgent.update, update_predictor, update_critic, update_actor)
    # Order: perturb (when due) -> beta -> V -> critic + encoder -> actor -> soft target update.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        self.last_step = step
        metrics: dict[str, float] = {}
        # [perturb] before this update, with the previous update's beta (1 before the first update).
        # Only steps where the loop calls update() count, as upstream: keep perturb_interval a multiple
        # of paper.train.update_every_steps.
        if step % self.perturb_interval == 0:
            metrics["perturb_factor"] = self.perturb()
            metrics["perturbations"] = float(self.perturbations)

        b = batch.to_torch(self.device)
        action, reward, discount = b["action"].float(), b["reward"].float(), b["discount"].float()

        # [aug]: augment obs and next_obs independently (fp32, outside autocast), then encode.
        obs = self.aug(b["obs"].float())
        next_obs = self.aug(b["next_obs"].float())
        with self._autocast():
            h = self.encoder(obs)
            with torch.no_grad():
                next_h = self.encoder(next_obs)
        h_detached = h.detach()

        # [beta] on the augmented, encoded, detached batch, actor with std 0 (drm.py cal_dormant_ratio).
        with self._autocast():
            self.dormant_ratio = module_dormant_ratio(
                self.actor, self.actor.dormant_layers(), self.dormant_threshold, h_detached, 0.0
            )
        # [awaken] the decay clock of the sigma schedule starts at the first update past the uniform-action
        # phase whose beta is below the target.
        awake = step > self.num_expl_steps and self.dormant_ratio < self.target_dormant_ratio
        if self.awaken_step is None and awake:
            self.awaken_step = step
        stddev = self.stddev(step)  # [awaken]: same sigma for target actions and the actor loss
        lam = self.exploit_lambda()  # [exploit]

        # [exploit] V(s) <- expectile of min(Q1, Q2)(s, a) over replayed actions; detached features.
        # drm.py computes Q with gradients and lets the critic's grads be zeroed before the critic step;
        # computing Q without gradients gives the same numbers.
        with torch.no_grad(), self._autocast():
            q_replay = torch.min(*self.critic(h_detached, action)).float()
        with self._autocast():
            v = self.value(h_detached).float()
        value_loss = expectile_loss(v, q_replay, self.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        # [critic] + [exploit] y = R_n + gamma^n * (lambda * V(s') + (1 - lambda) * min(Q1', Q2')(s', a')),
        # a' = clip_[-1,1](pi(s') + clip(sigma * eps, +-c)); V(s') from the V-net just updated (as upstream).
        with torch.no_grad():
            with self._autocast():
                next_action = self.actor(next_h, stddev).sample(clip=self.stddev_clip)
                target_q1, target_q2 = self.critic_target(next_h, next_action)
                target_v_exploit = self.value(next_h)
            target_v_explore = torch.min(target_q1, target_q2).float()
            target_v = lam * target_v_exploit.float() + (1.0 - lam) * target_v_explore
            target_q = reward + discount * target_v  # discount = gamma^n, or 0 at a terminal

        # [critic] L = (Q1(h, a) - y)^2 + (Q2(h, a) - y)^2, batch mean; trains critic AND encoder.
        with self._autocast():
            q1, q2 = self.critic(h, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        # [actor] L = -min(Q1, Q2)(h, a~pi_sigma) on detached h: only the critic trains the encoder.
        with self._autocast():
            dist = self.actor(h_detached, stddev)
            pi_action = dist.sample(clip=self.stddev_clip)
            pi_q1, pi_q2 = self.critic(h_detached, pi_action)
        actor_loss = -torch.min(pi_q1, pi_q2).float().mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Target critic: theta' <- tau * theta + (1 - tau) * theta' (utils.soft_update_params).
        soft_update_(self.critic_target, self.critic, self.critic_target_tau)

        with torch.no_grad():
            scalars = {
                "batch_reward": reward.mean(),
                "critic_loss": critic_loss,
                "critic_q1": q1.mean(),
                "critic_q2": q2.mean(),
                "critic_target_q": target_q.mean(),
                "actor_loss": actor_loss,
                "actor_logprob": dist.log_prob(pi_action).sum(-1).mean(),
                "actor_ent": dist.entropy().sum(-1).mean(),
                "value_loss": value_loss,  # drm.py: predictor_loss
                "value_mean": v.mean(),
            }
            values = torch.stack([s.detach().float() for s in scalars.values()]).tolist()  # one sync
        metrics.update(zip(scalars, values, strict=True))
        metrics.update(actor_dormant_ratio=self.dormant_ratio, actor_stddev=stddev, exploit_lambda=lam)
        return metrics

    def diagnostics(self) -> dict[str, float]:
        """DrM's state next to each evaluation: beta, sigma at the latest step, awaken step (-1: not yet)."""
        return {
            "dormant_ratio": self.dormant_ratio,
            "exploration_std": self.stddev(self.last_step),
            "awaken_step": -1 if self.awaken_step is None else self.awaken_step,
            "perturbations": self.perturbations,
        }

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "value": self.value,
            "encoder_opt": self.encoder_opt,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "value_opt": self.value_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state["drm"] = {
            "dormant_ratio": float(self.dormant_ratio),
            "awaken_step": -1 if self.awaken_step is None else int(self.awaken_step),
            "perturbations": int(self.perturbations),
            "last_step": int(self.last_step),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "DrM", extra=("drm",))
        drm = state["drm"]
        try:
            self.dormant_ratio = float(drm["dormant_ratio"])
            awaken = int(drm["awaken_step"])
            self.perturbations = int(drm["perturbations"])
            self.last_step = int(drm["last_step"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"DrM checkpoint has a malformed 'drm' entry ({err})") from err
        self.awaken_step = None if awaken < 0 else awaken
