"""PPO: "Proximal Policy Optimization Algorithms" (Schulman, Wolski, Dhariwal, Radford, Klimov, 2017, arXiv
1707.06347), for continuous (Gaussian, state-independent log σ) and discrete (categorical) actions.

`# Eq. N` tags use the paper's numbering: Eq. 7 the clipped surrogate, Eq. 9 the combined objective, Eq. 11-12
generalised advantage estimation (GAE, Schulman et al. 2016). The implementation details are those of CleanRL,
vwxyzjn/cleanrl @016ca33 `cleanrl/ppo_continuous_action.py` (MuJoCo) and `cleanrl/ppo.py` (discrete):
orthogonal init, separate 64x64 tanh actor and critic, advantage normalisation per minibatch, clipped value
loss, global gradient clipping, linear lr annealing, Adam eps 1e-5, observation and reward normalisation.

Reads top to bottom: the networks, the rollout (`explore`, `observe`), GAE, then `learn`. The run loop
(`common.onpolicy.train_onpolicy`) steps the envs and calls `learn` when a rollout is full.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.onpolicy import ObservationNormalizer, RewardNormalizer, Rollout, clipped_surrogate, gae
from common.precision import check_precision

CFG_KEYS = (
    "lr",
    "anneal_lr",
    "anneal_steps",
    "adam_eps",
    "hidden_dim",
    "num_envs",
    "rollout_steps",
    "epochs",
    "minibatches",
    "gamma",
    "gae_lambda",
    "clip_coef",
    "clip_value_loss",
    "norm_adv",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "normalize_obs",
    "normalize_reward",
    "obs_clip",
    "reward_clip",
)


# ---------------------------------------------------------------------------------------------------
# Networks (CleanRL `Agent`): orthogonal weights (gain √2, policy head 0.01, value head 1), zero biases.
# ---------------------------------------------------------------------------------------------------
def layer(in_dim: int, out_dim: int, gain: float = math.sqrt(2.0)) -> nn.Linear:
    """CleanRL `layer_init`: an orthogonal Linear with gain `gain` and zero bias."""
    linear = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)
    return linear


def tanh_mlp(in_dim: int, hidden: int, out_dim: int, out_gain: float) -> nn.Sequential:
    return nn.Sequential(
        layer(in_dim, hidden), nn.Tanh(), layer(hidden, hidden), nn.Tanh(), layer(hidden, out_dim, out_gain)
    )


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs. Continuous: a Gaussian with mean from the actor and a learned,
    state-independent log σ (initially 0); discrete: a categorical over the actor's logits."""

    def __init__(self, obs_dim: int, hidden: int, action_dim: int, discrete: bool) -> None:
        super().__init__()
        self.discrete = discrete
        self.critic = tanh_mlp(obs_dim, hidden, 1, out_gain=1.0)
        self.actor = tanh_mlp(obs_dim, hidden, action_dim, out_gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(action_dim), requires_grad=not discrete)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def dist(self, obs: torch.Tensor) -> Distribution:
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out)
        return Normal(out, self.log_std.exp().expand_as(out))

    def log_prob_entropy(self, dist: Distribution, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a|s) and the entropy, summed over action dimensions for a Gaussian."""
        if self.discrete:
            return dist.log_prob(action), dist.entropy()
        return dist.log_prob(action).sum(-1), dist.entropy().sum(-1)


# ---------------------------------------------------------------------------------------------------
# The next values GAE (common.onpolicy.gae, Eq. 11-12) bootstraps from, with time limits bootstrapping.
# ---------------------------------------------------------------------------------------------------
def next_values(
    values: torch.Tensor, truncated: torch.Tensor, final_values: torch.Tensor, last_value: torch.Tensor
) -> torch.Tensor:
    """V(s_{t+1}) for each step of a ``(T, N)`` rollout: the next stored value (`last_value` ``(N,)``
    after the last step) or, where the episode was truncated, `final_values[t]`, the value of the observation
    it was cut at (a time limit is not an end of the task). `common.onpolicy.gae` zeroes it after a true
    terminal.
    DEVIATION: CleanRL treats a truncation as a terminal (no bootstrap); this is SB3's and the
    partial-episode-bootstrapping fix (Pardo et al. 2018), which the issue asks for."""
    following = torch.cat([values[1:], last_value.unsqueeze(0)])
    return torch.where(truncated, final_values, following)


class PPOAgent:
    """PPO: GAE, clipped policy and value losses, running normalisation (`common.onpolicy.OnPolicyAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        missing = [k for k in CFG_KEYS if k not in cfg]
        if missing:
            raise ConfigError(
                f"paper.agent is missing {', '.join(missing)} (PPO needs {', '.join(CFG_KEYS)})"
            )
        if check_precision(precision) != "fp32":
            raise ConfigError(f"PPO here runs in fp32; got precision={precision} (small MLPs gain nothing)")
        if spec.pixels:  # a symbolic grid (MiniGrid, MinAtar) is a state: flattened into one vector
            raise ConfigError(f"PPO here learns from states (pixels=false), got pixels {spec.obs_shape}")
        self.discrete = hasattr(spec, "num_actions")
        if not self.discrete and len(spec.action_shape) != 1:
            raise ConfigError(f"PPO needs a flat action vector or discrete actions, got {spec.action_shape}")
        self.device = torch.device(device)
        self.num_envs, self.rollout_steps = int(cfg.num_envs), int(cfg.rollout_steps)
        batch = self.num_envs * self.rollout_steps
        self.epochs, self.minibatches = int(cfg.epochs), int(cfg.minibatches)
        if self.epochs < 1 or not 1 <= self.minibatches <= batch:
            raise ConfigError(
                f"paper.agent.epochs={self.epochs} must be >= 1 and minibatches={self.minibatches} in "
                f"[1, num_envs * rollout_steps = {batch}]"
            )
        self.minibatch_size = batch // self.minibatches  # CleanRL: batch_size // num_minibatches
        self.gamma, self.lam = float(cfg.gamma), float(cfg.gae_lambda)
        self.clip, self.clip_value_loss = float(cfg.clip_coef), bool(cfg.clip_value_loss)
        self.norm_adv = bool(cfg.norm_adv)
        self.ent_coef, self.vf_coef = float(cfg.ent_coef), float(cfg.vf_coef)
        self.max_grad_norm = float(cfg.max_grad_norm)
        self.target_kl = None if cfg.target_kl is None else float(cfg.target_kl)
        self.lr, self.anneal_lr = float(cfg.lr), bool(cfg.anneal_lr)
        # CleanRL: num_iterations = total_timesteps // batch_size; lr = (1 - (iteration - 1) / num_iterations)
        # times lr0 at each iteration (1-based)
        self.num_iterations = max(1, int(cfg.anneal_steps) // batch)
        self.num_updates = 0  # rollouts learned from (CleanRL `iteration` - 1)

        obs_dim = self.obs_dim = math.prod(spec.obs_shape)
        action_dim = int(spec.num_actions) if self.discrete else spec.action_shape[0]  # type: ignore[attr-defined]
        self.net = ActorCritic(obs_dim, int(cfg.hidden_dim), action_dim, self.discrete).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, eps=float(cfg.adam_eps))
        self.obs_norm = ObservationNormalizer((obs_dim,), bool(cfg.normalize_obs), float(cfg.obs_clip))
        self.reward_norm = RewardNormalizer(
            self.num_envs, self.gamma, bool(cfg.normalize_reward), float(cfg.reward_clip)
        )
        action_field = ((), torch.int64) if self.discrete else ((action_dim,), torch.float32)
        self.rollout = Rollout(
            self.rollout_steps,
            self.num_envs,
            {
                "obs": ((obs_dim,), torch.float32),  # normalised with the statistics of collection time
                "action": action_field,
                "log_prob": ((), torch.float32),
                "value": ((), torch.float32),
                "reward": ((), torch.float32),  # normalised and clipped
                "terminated": ((), torch.bool),
                "truncated": ((), torch.bool),
                "final_value": ((), torch.float32),  # V(final observation) of a truncated step
            },
        )

    def _obs(self, obs: np.ndarray, update: bool) -> torch.Tensor:
        flat = np.asarray(obs, np.float32).reshape(len(obs), self.obs_dim)
        return torch.as_tensor(self.obs_norm(flat, update), device=self.device)

    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        # Continuous: the sampled action is stored as is; the env receives it clipped to [-1, 1] (CleanRL's
        # ClipAction wrapper; our envs map [-1, 1] onto their box).
        return action.cpu().numpy() if self.discrete else action.clamp(-1.0, 1.0).cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Acting
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One action for one observation with frozen statistics. DEVIATION: evaluation is deterministic
        (the Gaussian mean, the most likely class), as every rlrepro evaluation; CleanRL evaluates samples."""
        dist = self.net.dist(self._obs(obs[None], update=False))
        greedy = dist.probs.argmax(-1) if self.discrete else dist.mean  # type: ignore[attr-defined]
        action = greedy if eval_mode else dist.sample()
        return self._env_action(action)[0]

    @torch.no_grad()
    def explore(self, obs: np.ndarray, step: int) -> np.ndarray:
        """Sample actions for all envs and record the rollout step. The observation statistics merge each
        observation acted on, before it is normalised (Gymnasium `NormalizeObservation` order). DEVIATION:
        an episode's final observation, never acted on, is not merged (Gymnasium's wrapper merges it)."""
        obs_t = self._obs(obs, update=True)
        dist = self.net.dist(obs_t)
        action = dist.sample()
        log_prob, _ = self.net.log_prob_entropy(dist, action)
        self.rollout.add(obs=obs_t, action=action, log_prob=log_prob, value=self.net.value(obs_t))
        return self._env_action(action)

    @torch.no_grad()
    def observe(
        self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, final_obs: np.ndarray
    ) -> None:
        truncated = np.asarray(truncated, bool) & ~np.asarray(terminated, bool)
        final_value = torch.zeros(self.num_envs)
        if truncated.any():  # bootstrap a time-limit end from the value of where it stopped (see `gae`)
            final_value = self.net.value(self._obs(final_obs, update=False)).cpu() * torch.as_tensor(
                truncated
            )
        self.rollout.add(
            reward=self.reward_norm(reward, terminated),
            terminated=terminated,
            truncated=truncated,
            final_value=final_value,
        )
        self.rollout.advance()

    def discard_rollout(self) -> None:
        self.rollout.clear()

    # -----------------------------------------------------------------------------------------------
    # Learning (CleanRL: GAE, then `epochs` passes over shuffled minibatches)
    # -----------------------------------------------------------------------------------------------
    def learn(self, next_obs: np.ndarray, step: int) -> dict[str, float]:
        if not self.rollout.full:
            raise RuntimeError(f"learn() on a rollout of {self.rollout.t}/{self.rollout_steps} steps")
        if self.anneal_lr:  # linear to 0 over num_iterations rollouts
            frac = max(0.0, 1.0 - self.num_updates / self.num_iterations)
            self.opt.param_groups[0]["lr"] = frac * self.lr
        d = {k: v.to(self.device) for k, v in self.rollout.data.items()}
        with torch.no_grad():
            last_value = self.net.value(self._obs(next_obs, update=False))
            advantages = gae(  # Eq. 11-12
                d["reward"],
                d["value"],
                next_values(d["value"], d["truncated"], d["final_value"], last_value),
                d["terminated"].float(),
                (d["terminated"] | d["truncated"]).float(),
                self.gamma,
                self.lam,
            )
            returns = advantages + d["value"]  # the value target (TD(λ) return)

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(self.rollout_steps * self.num_envs, *x.shape[2:])

        obs, actions, old_log_prob = flat(d["obs"]), flat(d["action"]), flat(d["log_prob"])
        adv, ret, old_values = flat(advantages), flat(returns), flat(d["value"])
        sums: dict[str, float] = {}
        count = 0
        stop = False
        for _ in range(self.epochs):
            for idx in torch.randperm(obs.shape[0], device=self.device).split(self.minibatch_size):
                dist = self.net.dist(obs[idx])
                log_prob, entropy = self.net.log_prob_entropy(dist, actions[idx])
                log_ratio = log_prob - old_log_prob[idx]
                ratio = log_ratio.exp()
                mb_adv = adv[idx]
                if self.norm_adv:  # per minibatch (CleanRL norm_adv)
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                policy_loss = clipped_surrogate(ratio, mb_adv, self.clip)  # Eq. 7

                # Value loss: ½ (V − R)², or its clipped form max((V − R)², (V_old + clip(V − V_old) − R)²)
                value = self.net.value(obs[idx])
                value_loss = (value - ret[idx]).pow(2)
                if self.clip_value_loss:
                    clipped = old_values[idx] + (value - old_values[idx]).clamp(-self.clip, self.clip)
                    value_loss = torch.max(value_loss, (clipped - ret[idx]).pow(2))
                value_loss = 0.5 * value_loss.mean()

                # Eq. 9 as a loss: L^CLIP − c1 L^VF + c2 S, negated
                loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy.mean()
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
                self.opt.step()

                with torch.no_grad():
                    approx_kl = ((ratio - 1.0) - log_ratio).mean()  # k3 estimator, as CleanRL
                    clipfrac = ((ratio - 1.0).abs() > self.clip).float().mean()
                for key, val in (
                    ("policy_loss", policy_loss),
                    ("value_loss", value_loss),
                    ("entropy", entropy.mean()),
                    ("approx_kl", approx_kl),
                    ("clipfrac", clipfrac),
                ):
                    sums[key] = sums.get(key, 0.0) + float(val.detach())
                count += 1
            if self.target_kl is not None and float(approx_kl) > self.target_kl:
                stop = True  # CleanRL checks the last minibatch's KL after each epoch
            if stop:
                break

        self.num_updates += 1
        self.rollout.clear()
        out = {k: v / count for k, v in sums.items()}
        out["lr"] = float(self.opt.param_groups[0]["lr"])
        var_returns = float(ret.var(unbiased=False))
        if var_returns > 0:  # 1 - Var(R - V) / Var(R) of the values the rollout was collected with
            out["explained_variance"] = 1.0 - float((ret - old_values).var(unbiased=False)) / var_returns
        if not self.discrete:
            out["log_std"] = float(self.net.log_std.detach().mean())
        return out

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: networks, optimiser, normalisers, the partial rollout (exact resume)
    # -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **parts_state({"net": self.net, "opt": self.opt}),
            "obs_stats": self.obs_norm.stats.state_dict(),
            "reward_norm": self.reward_norm.state_dict(),
            "rollout": self.rollout.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(
            {"net": self.net, "opt": self.opt, "reward_norm": self.reward_norm, "rollout": self.rollout},
            state,
            "PPO",
            extra=("obs_stats", "num_updates"),
        )
        self.obs_norm.stats.load_state_dict(state["obs_stats"])
        self.num_updates = int(state["num_updates"])
