"""Uni-O4: "Unifying Online and Offline Deep Reinforcement Learning with Multi-Step On-Policy Optimization"
(Lei, He, Lu, Hu, Gao, Xu; ICLR 2024, arXiv 2311.03351). Official code: Lei-Kun/Uni-O4 @1eecc45 — `main.py`
(offline pipeline and defaults), `BC_ensemble.py` (ensemble BC with the diversity term), `critic.py`
(`IQL_Q_V`), `abppo.py` / `ppo.py` (multi-step offline PPO, OPE gating), `dynamics_eval.py` (OPE rollouts),
`ppo_finetune/{main,ppo,net}.py` (online PPO). `# Eq. N` tags follow the paper's Sec. 3-4.

Reads top to bottom: networks, the pure formulas under test, then the stages in run order — IQL Q and V,
the dynamics ensemble, the BC ensemble, the online critic's pretraining, offline multi-step PPO with OPE
gating, the policy hand-over, and online PPO. `papers.uni_o4.loop.train` decides which stage runs when.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.distributions import Normal

from common.agent import check_state_control
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.offline.data import OfflineData
from common.onpolicy import Rollout, clipped_surrogate, gae
from common.precision import check_precision
from papers.uni_o4.dynamics import EnsembleDynamics, terminated

CFG_KEYS = (
    "num_policies", "hidden_dim", "depth", "bc_lr", "bc_batch_size", "alpha_bc",
    "q_hidden_dim", "q_depth", "q_lr", "v_hidden_dim", "v_depth", "v_lr", "iql_batch_size", "omega",
    "gamma", "tau", "target_update_freq", "state_norm_eps",
    "bppo_lr", "bppo_batch_size", "clip_ratio", "clip_decay_steps", "entropy_weight", "grad_clip",
    "offline_steps", "ope_batch_size", "ope_rollout_length", "termination",
    "dynamics_hidden", "dynamics_members", "dynamics_elites", "dynamics_weight_decay", "dynamics_lr",
    "dynamics_batch_size", "dynamics_holdout", "dynamics_logvar_coef",
    "online_steps", "online_v_hidden_dim", "online_v_lr", "online_v_batch_size", "reward_scale",
    "actor_lr", "critic_lr", "adam_eps", "rollout_steps", "minibatch_size", "epochs", "online_clip",
    "online_entropy", "gae_lambda", "select_budget",
)  # fmt: skip
LOG_STD = (-5.0, 0.0)  # net.py GaussPolicyMLP._log_std_bound


# ---------------------------------------------------------------------------------------------------
# Networks (net.py `MLP`: Linear-act, (depth-1) x [Linear-act], Linear)
# ---------------------------------------------------------------------------------------------------
def mlp(inp: int, hidden: int, depth: int, out: int, final: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(inp, hidden), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden, out))
    return nn.Sequential(*layers, *([final] if final is not None else []))


class GaussPolicy(nn.Module):
    """net.py `GaussPolicyMLP`: one MLP with a final tanh gives (mu, x); log sigma = -5 + 2.5 (x + 1) in
    [-5, 0]. Orthogonal weights (gain 1), zero biases."""

    def __init__(self, obs_dim: int, hidden: int, depth: int, action_dim: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, depth, 2 * action_dim, nn.Tanh())
        for p in self.net.parameters():
            nn.init.orthogonal_(p) if p.dim() >= 2 else nn.init.zeros_(p)

    def forward(self, obs: torch.Tensor) -> Normal:
        mu, x = self.net(obs).chunk(2, dim=-1)
        low, high = LOG_STD
        return Normal(mu, (low + 0.5 * (high - low) * (x + 1.0)).exp())


def log_prob(dist: Normal, action: torch.Tensor) -> torch.Tensor:
    """utils.py `log_prob_func`: summed over action dimensions, shape (B,)."""
    return dist.log_prob(action).sum(-1)


class DoubleQ(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.q1 = mlp(obs_dim + action_dim, hidden, depth, 1)
        self.q2 = mlp(obs_dim + action_dim, hidden, depth, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([obs, action], dim=-1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)


# ---------------------------------------------------------------------------------------------------
# The formulas under test
# ---------------------------------------------------------------------------------------------------
def diversity_bc_loss(own: torch.Tensor, others: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 3 (BC_ensemble.py `joint_loss`, kl_bc='data', kl_type='heuristic'): for member i with
    log pi_i(a|s) = `own` (B,) and the other members' log-probabilities `others` (B, N-1),
    L_i = E[-log pi_i(a|s) - alpha (log pi_i(a|s) - max_{j != i} log pi_j(a|s))], the max detached."""
    best_other = others.max(dim=-1).values.detach()
    return (-own - alpha * (own - best_other)).mean()


def ope_gate(candidate: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Eq. 8 (main.py): member k's improved policy replaces its behaviour (old) policy only when its OPE
    estimate beats the best so far: the indices with candidate > best (strictly)."""
    return np.where(np.asarray(candidate) > np.asarray(best))[0]


class UniO4Agent:
    """All of Uni-O4's learners; the loop calls one stage's update per step."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("Uni-O4", cfg, CFG_KEYS, spec)
        if check_precision(precision) != "fp32":
            raise ConfigError(f"Uni-O4 here runs in fp32; got precision={precision}")
        if int(cfg.num_policies) < 2:
            raise ConfigError(f"paper.agent.num_policies={cfg.num_policies} must be >= 2 (an ensemble)")
        if cfg.termination not in ("hopper", "walker2d", "halfcheetah", "none"):
            raise ConfigError(
                f"paper.agent.termination={cfg.termination!r}: hopper|walker2d|halfcheetah|none"
            )
        self.cfg, self.device = cfg, torch.device(device)
        obs_dim, act_dim = spec.obs_shape[0], spec.action_shape[0]
        self.n, self.obs_dim, self.act_dim = int(cfg.num_policies), obs_dim, act_dim
        h, d = int(cfg.hidden_dim), int(cfg.depth)
        dev = self.device
        # IQL (critic.py IQL_Q_V): twin Q 2x1024, V 3x512, Adam 1e-4 each
        self.q = DoubleQ(obs_dim, act_dim, int(cfg.q_hidden_dim), int(cfg.q_depth)).to(dev)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = mlp(obs_dim, int(cfg.v_hidden_dim), int(cfg.v_depth), 1).to(dev)
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=float(cfg.q_lr))
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=float(cfg.v_lr))
        # dynamics ensemble for OPE
        self.dyn = EnsembleDynamics(
            obs_dim, act_dim, list(cfg.dynamics_hidden), int(cfg.dynamics_members),
            int(cfg.dynamics_elites), list(cfg.dynamics_weight_decay),
        ).to(dev)  # fmt: skip
        self.dyn_opt = torch.optim.Adam(self.dyn.parameters(), lr=float(cfg.dynamics_lr))
        # the ensemble: each member's policy, its behaviour ("old") policy, a BC and a BPPO optimiser
        self.pi = nn.ModuleList(GaussPolicy(obs_dim, h, d, act_dim) for _ in range(self.n)).to(dev)
        self.pi_old = copy.deepcopy(self.pi).requires_grad_(False)
        self.bc_opts = [torch.optim.Adam(p.parameters(), lr=float(cfg.bc_lr)) for p in self.pi]
        self.bppo_opts = [torch.optim.Adam(p.parameters(), lr=float(cfg.bppo_lr)) for p in self.pi]
        # online: actor (the selected member) and critic (ppo_finetune ValueReluMLP, final ReLU)
        self.actor = GaussPolicy(obs_dim, h, d, act_dim).to(dev)
        self.critic = mlp(obs_dim, int(cfg.online_v_hidden_dim), 3, 1, nn.ReLU()).to(dev)
        self.critic_pre_opt = torch.optim.Adam(self.critic.parameters(), lr=float(cfg.online_v_lr))
        eps = float(cfg.adam_eps)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=float(cfg.actor_lr), eps=eps)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=float(cfg.critic_lr), eps=eps)
        self.rollout = Rollout(
            int(cfg.rollout_steps), 1,
            {"obs": ((obs_dim,), torch.float32), "action": ((act_dim,), torch.float32),
             "log_prob": ((), torch.float32), "reward": ((), torch.float32),
             "next_obs": ((obs_dim,), torch.float32), "dw": ((), torch.float32), "done": ((), torch.float32)},
        )  # fmt: skip
        self.obs_mean = torch.zeros(obs_dim, device=dev)
        self.obs_std = torch.ones(obs_dim, device=dev)
        self.c: dict[str, Any] = {
            "iql_updates": 0, "bppo_updates": 0, "clip": float(cfg.clip_ratio), "selected": -1,
            "online_updates": 0, "online_steps": 0, "ope_rounds": 0,
        }  # fmt: skip
        self.best_ope = torch.zeros(self.n)  # set by the first OPE round (counters["ope_rounds"] = 0 until)
        self.last_ope = torch.zeros(self.n)

    # -----------------------------------------------------------------------------------------------
    # The dataset (main.py + buffer.py): states normalised by the dataset mean / (std + 1e-10)
    # (--is_state_norm True in scripts/mujoco_loco/*.sh); not_done = 1 - (terminal | timeout).
    # -----------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        t = lambda x: torch.as_tensor(np.asarray(x, np.float32), device=self.device)  # noqa: E731
        obs64 = data.observations.astype(np.float64)
        self.obs_mean = t(obs64.mean(0))
        self.obs_std = t(obs64.std(0) + float(self.cfg.state_norm_eps))
        self.raw_obs, self.raw_next = t(data.observations), t(data.next_observations)
        self.obs, self.next_obs = self.normalize(self.raw_obs), self.normalize(self.raw_next)
        self.actions, self.rewards = t(data.actions), t(data.rewards)
        ends = data.terminations | data.truncations
        self.not_done = t(1.0 - ends)
        # Monte-Carlo returns of the scaled rewards (buffer.py `compute_return`), the online critic's target
        ret, running = np.zeros(len(data)), 0.0
        scaled = data.rewards.astype(np.float64) * float(self.cfg.reward_scale)
        for i in reversed(range(len(data))):
            running = scaled[i] + float(self.cfg.gamma) * running * (0.0 if ends[i] else 1.0)
            ret[i] = running
        self.mc_return = t(ret)
        # dynamics inputs (s, a) and targets (s' - s, r); holdout min(20%, 1000) (ensemble_dynamics.py)
        self.dyn_in = torch.cat([self.raw_obs, self.actions], -1)
        self.dyn_out = torch.cat([self.raw_next - self.raw_obs, self.rewards[:, None]], -1)
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(data), generator=gen).to(self.device)
        hold = min(int(0.2 * len(data)), int(self.cfg.dynamics_holdout))
        self.hold_idx, self.train_idx = perm[:hold], perm[hold:]
        train_in = self.dyn_in[self.train_idx]
        self.dyn.in_mean.copy_(train_in.mean(0))
        self.dyn.in_std.copy_(train_in.std(0, unbiased=False).clamp_min(1e-12))  # scaler.py StandardScaler

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def _sample(self, size: int, pool: torch.Tensor | None = None) -> torch.Tensor:
        if pool is None:
            return torch.randint(0, self.obs.shape[0], (size,), device=self.device)
        return pool[torch.randint(0, pool.shape[0], (size,), device=self.device)]

    # -----------------------------------------------------------------------------------------------
    # Stage 1 — Q and V by IQL (Sec. 4.1, critic.py `IQL_Q_V.update`; --is_iql True): V first, then Q.
    # -----------------------------------------------------------------------------------------------
    def iql_update(self) -> dict[str, float]:
        i = self._sample(int(self.cfg.iql_batch_size))
        s, a, r, s2, nd = self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.not_done[i]
        with torch.no_grad():
            target_q = torch.min(*self.q_target(s, a))
        diff = target_q - self.v(s).squeeze(-1)
        tau = float(self.cfg.omega)  # expectile 0.7: |tau - 1(u < 0)| u^2
        v_loss = (torch.where(diff > 0, tau, 1 - tau) * diff**2).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        with torch.no_grad():
            y = r + nd * float(self.cfg.gamma) * self.v(s2).squeeze(-1)
        q1, q2 = self.q(s, a)
        q_loss = ((q1 - y) ** 2 + (q2 - y) ** 2).mean()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        self.c["iql_updates"] += 1
        if self.c["iql_updates"] % int(self.cfg.target_update_freq) == 0:  # Polyak every 2nd update
            with torch.no_grad():
                for p, tp in zip(self.q.parameters(), self.q_target.parameters(), strict=True):
                    tp.lerp_(p, float(self.cfg.tau))
        return {"q_loss": q_loss.item(), "v_loss": v_loss.item()}

    def min_q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.min(*self.q(obs, action))

    # -----------------------------------------------------------------------------------------------
    # Stage 2 — the dynamics ensemble (dynamics_eval.py `train_dynamics`): each member on its own
    # bootstrap-shuffled batch of the training split; `dynamics_finish` keeps the 5 best on the holdout.
    # -----------------------------------------------------------------------------------------------
    def dynamics_update(self) -> dict[str, float]:
        m, b = self.dyn.members, int(self.cfg.dynamics_batch_size)
        idx = self.train_idx[torch.randint(0, self.train_idx.shape[0], (m, b), device=self.device)]
        loss = self.dyn.loss(self.dyn_in[idx], self.dyn_out[idx], float(self.cfg.dynamics_logvar_coef))
        self.dyn_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dyn_opt.step()
        return {"dynamics_loss": loss.item()}

    def dynamics_finish(self) -> dict[str, float]:
        mse = self.dyn.holdout_mse(self.dyn_in[self.hold_idx], self.dyn_out[self.hold_idx])
        self.dyn.elites.copy_(torch.argsort(mse)[: self.dyn.num_elites])
        return {"dynamics_holdout_mse": float(mse.sort().values[: self.dyn.num_elites].mean())}

    # -----------------------------------------------------------------------------------------------
    # Stage 3 — the BC ensemble with the diversity term (Eq. 3, BC_ensemble.py `joint_train`): one shared
    # batch; members updated one after another in a random order, each against the others' latest weights.
    # -----------------------------------------------------------------------------------------------
    def bc_update(self) -> dict[str, float]:
        i = self._sample(int(self.cfg.bc_batch_size))
        s, a = self.obs[i], self.actions[i]
        losses = []
        for k in torch.randperm(self.n).tolist():
            with torch.no_grad():
                others = torch.stack([log_prob(self.pi[j](s), a) for j in range(self.n) if j != k], -1)
            loss = diversity_bc_loss(log_prob(self.pi[k](s), a), others, float(self.cfg.alpha_bc))
            self.bc_opts[k].zero_grad(set_to_none=True)
            loss.backward()
            self.bc_opts[k].step()
            losses.append(loss.item())
        return {"bc_loss": float(np.mean(losses))}

    def bc_finish(self) -> None:
        """abppo.py `load_bc`: each member's policy and behaviour policy start from its BC weights."""
        self.pi_old.load_state_dict(self.pi.state_dict())

    # -----------------------------------------------------------------------------------------------
    # Stage 4 — the online critic (ppo_finetune/main.py, --scale_strategy number): V regressed on Monte-Carlo
    # returns of 0.1 * r over the dataset (ValueLearner.update: MSE, Adam 1e-4, batch 512).
    # -----------------------------------------------------------------------------------------------
    def critic_pretrain_update(self) -> dict[str, float]:
        i = self._sample(int(self.cfg.online_v_batch_size))
        loss = F.mse_loss(self.critic(self.obs[i]).squeeze(-1), self.mc_return[i])
        self.critic_pre_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_pre_opt.step()
        return {"critic_pretrain_loss": loss.item()}

    # -----------------------------------------------------------------------------------------------
    # Stage 5 — offline multi-step PPO (Sec. 4.2, abppo.py `joint_train`): actions from each member's
    # behaviour policy, A = min Q(s, a) - V(s) normalised per member, the clipped ratio new / behaviour.
    # -----------------------------------------------------------------------------------------------
    def bppo_update(self, t: int) -> dict[str, float]:
        """Step t (0-based) of `offline_steps`: lr and clip decay linearly (main.py --is_linear_decay), the
        clip only over the first `clip_decay_steps` (main.py: is_clip_decay off after step 200)."""
        cfg, total = self.cfg, max(1, int(self.cfg.offline_steps))
        if t <= int(cfg.clip_decay_steps):
            self.c["clip"] = float(cfg.clip_ratio) * (1 - t / total)
        s = self.obs[self._sample(int(cfg.bppo_batch_size))]
        losses = []
        for k in range(self.n):
            with torch.no_grad():
                old = self.pi_old[k](s)
                a = old.sample()
                adv = self.min_q(s, a) - self.v(s).squeeze(-1)
                adv = (adv - adv.mean()) / (adv.std() + 1e-10)  # CONST_EPS
            new = self.pi[k](s)
            ratio = (log_prob(new, a) - log_prob(old, a)).exp()
            entropy = new.entropy().sum(-1).mean()
            loss = (
                clipped_surrogate(ratio, adv, self.c["clip"]) - float(cfg.entropy_weight) * entropy
            )  # Eq. 9
            self.bppo_opts[k].zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.pi[k].parameters(), float(cfg.grad_clip))
            self.bppo_opts[k].step()
            for group in self.bppo_opts[k].param_groups:  # set after the step, as abppo.py `update`
                group["lr"] = float(cfg.bppo_lr) * (1 - t / total)
            losses.append(loss.item())
        self.c["bppo_updates"] += 1
        return {"bppo_loss": float(np.mean(losses)), "clip_ratio": self.c["clip"]}

    @torch.no_grad()
    def ope(self, k: int) -> float:
        """Eq. 7 (dynamics_eval.py `rollout`): from `ope_batch_size` dataset states, roll member k's mean
        action through the learned dynamics for up to `ope_rollout_length` steps, dropping terminated rows;
        the estimate is the mean of min Q(s, a) over every visited pair."""
        raw = self.raw_obs[self._sample(int(self.cfg.ope_batch_size))]
        qs = []
        for _ in range(int(self.cfg.ope_rollout_length)):
            s = self.normalize(raw)
            a = self.pi[k](s).mean.clamp(-1.0, 1.0)
            qs.append(self.min_q(s, a))
            raw, _ = self.dyn.step(raw, a)
            keep = ~terminated(str(self.cfg.termination), raw)
            if not keep.any():
                break
            raw = raw[keep]
        return float(torch.cat(qs).mean())

    def ope_round(self) -> dict[str, float]:
        """Every `eval_step` BPPO steps (main.py): OPE each member; accepted members' behaviour policies
        become their current policies (Eq. 8), the others keep theirs (their policies train on)."""
        scores = np.array([self.ope(k) for k in range(self.n)])
        self.last_ope = torch.as_tensor(scores, dtype=torch.float32)
        self.c["ope_rounds"] += 1
        if self.c["ope_rounds"] == 1:  # the first round: the BC policies' estimates
            self.best_ope = self.last_ope.clone()
            return {"ope_mean": float(scores.mean()), "accepted": 0.0}
        accepted = ope_gate(scores, self.best_ope.numpy())
        for k in accepted.tolist():
            self.best_ope[k] = float(scores[k])
            self.pi_old[k].load_state_dict(self.pi[k].state_dict())
        return {"ope_mean": float(scores.mean()), "accepted": float(len(accepted))}

    # -----------------------------------------------------------------------------------------------
    # Acting. Offline: the ensemble's action (abppo.py `mixed_offline_evaluate`, greedy): each member's
    # clamped mean, the one its own density rates highest. After the hand-over: the online actor.
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        s = self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device)[None])
        if self.c["selected"] >= 0:
            dist = self.actor(s)
            a = dist.mean if eval_mode else dist.sample()
            return a.clamp(-1.0, 1.0)[0].cpu().numpy()
        dists = [p(s) for p in self.pi]
        means = [dist.mean.clamp(-1.0, 1.0) for dist in dists]
        dens = torch.stack([log_prob(dist, m) for dist, m in zip(dists, means, strict=True)]).squeeze(-1)
        return means[int(dens.argmax())][0].cpu().numpy()

    def candidates(self) -> list[int]:
        """ppo_finetune/ppo.py `load_pi_value`: the `select_budget` members with the best last OPE estimates;
        the loop evaluates them in the env and hands over the best (`select`)."""
        order = torch.argsort(self.last_ope, descending=True)
        return order[: int(self.cfg.select_budget)].tolist()

    def select(self, k: int) -> None:
        self.actor.load_state_dict(self.pi[k].state_dict())
        self.c["selected"] = int(k)

    # -----------------------------------------------------------------------------------------------
    # Stage 6 — online PPO (Sec. 4.3, ppo_finetune/ppo.py): the same clipped objective on the env's data.
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> np.ndarray:
        """`choose_action`: sample, clamp to [-1, 1], log-probability of the clamped action."""
        s = self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device)[None])
        dist = self.actor(s)
        a = dist.sample().clamp(-1.0, 1.0)
        self.rollout.add(obs=s[0].cpu(), action=a[0].cpu(), log_prob=log_prob(dist, a)[0].cpu())
        return a[0].cpu().numpy()

    def observe(self, reward: float, term: bool, trunc: bool, next_obs: np.ndarray) -> None:
        s2 = self.normalize(torch.as_tensor(next_obs, dtype=torch.float32, device=self.device))
        self.rollout.add(
            reward=reward * float(self.cfg.reward_scale),  # r_scale 0.1 (--scale_strategy number)
            next_obs=s2.cpu(), dw=float(term), done=float(term or trunc),
        )  # fmt: skip
        self.rollout.advance()
        self.c["online_steps"] += 1

    def learn(self) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        d = {k: v[:, 0].to(dev) for k, v in self.rollout.data.items()}
        eps = float(cfg.online_clip)
        with torch.no_grad():
            vs, vs2 = self.critic(d["obs"]).squeeze(-1), self.critic(d["next_obs"]).squeeze(-1)
            adv = gae(d["reward"], vs, vs2, d["dw"], d["done"], float(cfg.gamma), float(cfg.gae_lambda))
            v_target = adv + vs
            adv = (adv - adv.mean()) / (adv.std() + 1e-5)  # use_adv_norm, whole batch
        sums = {"actor_loss": 0.0, "critic_loss": 0.0}
        count, n = 0, d["reward"].shape[0]
        for _ in range(int(cfg.epochs)):
            for idx in torch.randperm(n, device=dev).split(int(cfg.minibatch_size)):
                dist = self.actor(d["obs"][idx])
                ratio = (log_prob(dist, d["action"][idx]) - d["log_prob"][idx]).exp()
                entropy = dist.entropy().sum(-1).mean()
                actor_loss = clipped_surrogate(ratio, adv[idx], eps) - float(cfg.online_entropy) * entropy
                self.actor_opt.zero_grad(set_to_none=True)
                actor_loss.backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), float(cfg.grad_clip))
                self.actor_opt.step()
                v = self.critic(d["obs"][idx]).squeeze(-1)  # clipped value loss, clip = epsilon, no 1/2
                clipped = vs[idx] + (v - vs[idx]).clamp(-eps, eps)
                critic_loss = torch.max((v - v_target[idx]) ** 2, (clipped - v_target[idx]) ** 2).mean()
                self.critic_opt.zero_grad(set_to_none=True)
                critic_loss.backward()
                nn.utils.clip_grad_norm_(self.critic.parameters(), float(cfg.grad_clip))
                self.critic_opt.step()
                sums["actor_loss"] += actor_loss.item()
                sums["critic_loss"] += critic_loss.item()
                count += 1
        frac = max(0.0, 1 - self.c["online_steps"] / max(1, int(cfg.online_steps)))  # use_lr_decay
        for opt, lr in ((self.actor_opt, cfg.actor_lr), (self.critic_opt, cfg.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = float(lr) * frac
        self.rollout.clear()
        self.c["online_updates"] += 1
        return {k: v / max(1, count) for k, v in sums.items()}

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: every learner, optimiser, counter, the OPE bests and the partial rollout.
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, Any]:
        parts: dict[str, Any] = {
            "q": self.q, "q_target": self.q_target, "v": self.v, "q_opt": self.q_opt, "v_opt": self.v_opt,
            "dyn": self.dyn, "dyn_opt": self.dyn_opt, "pi": self.pi, "pi_old": self.pi_old,
            "actor": self.actor, "critic": self.critic, "critic_pre_opt": self.critic_pre_opt,
            "actor_opt": self.actor_opt, "critic_opt": self.critic_opt, "rollout": self.rollout,
        }  # fmt: skip
        for k in range(self.n):
            parts[f"bc_opt_{k}"], parts[f"bppo_opt_{k}"] = self.bc_opts[k], self.bppo_opts[k]
        return parts

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state.update(counters=dict(self.c), best_ope=self.best_ope.clone(), last_ope=self.last_ope.clone())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "Uni-O4", extra=("counters", "best_ope", "last_ope"))
        self.c.update(state["counters"])
        self.best_ope, self.last_ope = state["best_ope"].clone(), state["last_ope"].clone()
