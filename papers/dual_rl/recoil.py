"""ReCOIL (Relaxed Coverage for Off-policy Imitation Learning), the offline-imitation method of "Dual RL:
Unification and New Methods for Reinforcement and Imitation Learning", Sikchi, Zheng, Zhang, Niekum, ICLR
2024 (arXiv 2302.08560).

ReCOIL imitates from a few expert demonstrations plus an arbitrary pool of off-policy data, without
assuming that the pool covers the expert's visitation: it matches the *mixture* of expert and pool data,
which needs no discriminator. In the official code this becomes an IQL/XQL-style learner on a batch made
of a pool half and an expert half, with the rewards zeroed: V is a Gumbel soft maximum of Q over the pool
half, Q of expert pairs is regressed to a fixed high value and Q of pool pairs to -reward_gap + gamma V(s')
(the LS-IQ bounded-target trick), and the policy is AWR on the pool half. The code follows
hari-sikchi/ReCOIL @85662f4 `offline/` (read through its fork chufanchen/ReCOIL, whose history holds that
commit): `critic_imitate.py` (`rkl_loss_imitate`, `update_v_imitate`, `update_q_imitate`), `actor.py`
(`update_imitate`), `learner_imitate.py` (`_update_jit`, `Learner`), `train_offline_imitate.py` (flags).

Reads top to bottom: the networks, `prepare` (the demonstrations), `act`, then `update` in the official
order: V, actor, Q, target critic, each step the shared one of IQL's learner
(common/offline/implicit_value.py `value_step`, `critic_step`; common/offline/awr.py `awr_weights`,
`awr_actor_step`) with ReCOIL's losses. The run loop samples the pool half (`batch`); the agent samples an
expert half of the same size from the demonstrations `prepare` received (its sampler state is checkpointed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.agent import check_state_control
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks import soft_update_
from common.offline.awr import (
    ACTION_CLIP,
    awr_actor_step,
    awr_weights,
    check_actor_schedule,
    cosine_lr,
    gaussian_act,
)
from common.offline.data import OfflineData, OfflineSampler
from common.offline.dual_losses import gumbel_loss
from common.offline.implicit_value import (
    build_implicit_nets,
    critic_step,
    implicit_parts,
    logged_scalars,
    next_value,
    value_step,
)
from common.precision import check_precision

CFG_KEYS = (
    "actor_lr",
    "value_lr",
    "critic_lr",
    "hidden_dim",
    "tau",
    "discount",
    "loss_temp",
    "max_clip",
    "temperature",
    "adv_weight_max",
    "value_layer_norm",
    "reward_gap",
    "expert_q",
    "log_std_min",
    "log_std_max",
    "actor_lr_schedule",
    "max_steps",
)


def recoil_critic_loss(q: torch.Tensor, target: torch.Tensor, expert_q: float, n_pool: int) -> torch.Tensor:
    """critic_imitate.py `fixed_target_loss` for one head on a [pool; expert] batch of 2n rows:
    mean_i [ (Q(expert_i) - expert_q)^2 / 2 + (Q(pool_i) - y(pool_i))^2 / 2 ]."""
    return (0.5 * (q[n_pool:] - expert_q).pow(2) + 0.5 * (q[:n_pool] - target[:n_pool]).pow(2)).mean()


class ReCOILAgent:
    """ReCOIL: Gumbel V over the pool, bounded-target Q on [pool; expert], AWR on the pool
    (`common.agent.OfflineAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("ReCOIL", cfg, CFG_KEYS, spec)
        check_actor_schedule(cfg)
        if not float(cfg.loss_temp) > 0.0:
            raise ConfigError(f"paper.agent.loss_temp={cfg.loss_temp} must be positive (the Gumbel beta)")
        if not 0.0 < float(cfg.discount) <= 1.0:
            raise ConfigError(f"paper.agent.discount={cfg.discount} must be in (0, 1]")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.tau = float(cfg.tau)
        self.gamma = float(cfg.discount)
        self.beta = float(cfg.loss_temp)
        self.max_clip = None if cfg.max_clip is None else float(cfg.max_clip)
        self.temperature = float(cfg.temperature)
        self.adv_weight_max = float(cfg.adv_weight_max)
        self.reward_gap = float(cfg.reward_gap)
        self.expert_q = float(cfg.expert_q)
        self.actor_lr = float(cfg.actor_lr)
        self.cosine = cfg.actor_lr_schedule == "cosine"
        self.max_steps = int(cfg.max_steps)

        # Networks (common/offline/implicit_value.py, as value_net.py, policy.py): 256x256 ReLU MLPs,
        # orthogonal init (gain sqrt 2) everywhere; LayerNorm in V only if value_layer_norm (ReCOIL's
        # mujoco_config.py: layernorm=False); the target critic starts as a copy; one Adam each.
        nets = build_implicit_nets(cfg, spec, self.device, bool(cfg.value_layer_norm))
        self.actor, self.critic, self.critic_target, self.value = nets[:4]
        self.actor_opt, self.critic_opt, self.value_opt = nets[4:]

        self.expert_sampler: OfflineSampler | None = None  # set by `prepare`
        self.num_updates = 0  # the cosine schedule's count

    # -----------------------------------------------------------------------------------------------
    # The demonstrations (train_offline_imitate.py: `expert_dataset.sample(batch_size)` next to every
    # pool batch). papers/dual_rl/loop.py passes them here; the sampler is seeded from the torch RNG
    # (the run seed) and its state is saved with the checkpoint. No state or reward statistics: the
    # official code keeps states raw and zeroes rewards.
    # -----------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        if len(data) == 0:
            raise ConfigError("ReCOIL needs at least one expert transition; raise paper.num_expert_episodes")
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        self.expert_sampler = OfflineSampler(data, self.gamma, seed)

    # -----------------------------------------------------------------------------------------------
    # Acting (evaluation.py: `sample_actions(temperature=0)`, the tanh'd mean; samples clipped to [-1, 1]).
    # -----------------------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return gaussian_act(self.actor, obs_t, not eval_mode, self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Learning (learner_imitate.py `_update_jit`): one batch [pool (n rows); expert (n rows)], rewards 0.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        if self.expert_sampler is None:
            raise RuntimeError("ReCOILAgent.prepare(demonstrations) must run before update")
        n = batch.obs.shape[0]
        pool = batch.to_torch(self.device)
        expert = self.expert_sampler.sample(n).to_torch(self.device)
        obs = torch.cat([pool["obs"], expert["obs"]]).float()
        next_obs = torch.cat([pool["next_obs"], expert["next_obs"]]).float()
        action = torch.cat([pool["action"], expert["action"]]).float().clamp(-ACTION_CLIP, ACTION_CLIP)
        discount = torch.cat([pool["discount"], expert["discount"]]).float()  # gamma * (1 - terminal)

        # Value (critic_imitate.py `update_v_imitate` + `rkl_loss_imitate`): XQL's rescaled Gumbel loss of
        # z = (min(Q1', Q2')(s, a) - V(s)) / beta on the whole batch (the clip at max_clip and the max-z
        # rescaling span both halves), averaged over the pool half only: V = soft max of Q over pool actions.
        q_target, v, value_loss = value_step(
            self.critic_target,
            self.value,
            self.value_opt,
            obs,
            action,
            lambda diff: gumbel_loss(diff, self.beta, self.max_clip)[:n],
            self.device,
            self.precision,
        )

        # Policy (actor.py `update_imitate`): AWR on the pool half,
        # L_pi = -mean_pool[min(exp(temperature * (min(Q1', Q2') - V_new)), 100) log pi(a|s)].
        adv, weights = awr_weights(
            self.value, obs, q_target, self.temperature, self.adv_weight_max, self.device, self.precision
        )
        lr = cosine_lr(self.actor_lr, self.num_updates, self.max_steps) if self.cosine else self.actor_lr
        actor_loss, log_std = awr_actor_step(
            self.actor, self.actor_opt, obs[:n], action[:n], weights[:n], lr, self.device, self.precision
        )

        # Q (critic_imitate.py `update_q_imitate`, "LS-IQ stability trick", arXiv 2303.00599), rewards 0:
        # y = -reward_gap + gamma * mask * V_new(s') + gamma * (1 - mask) * (-expert_q) on the pool half;
        # expert pairs are regressed to expert_q. gamma * (1 - mask) = gamma - discount.
        next_v = next_value(self.value, next_obs, self.device, self.precision)
        target = -self.reward_gap + discount * next_v + (self.gamma - discount) * (-self.expert_q)
        critic_loss, q1, q2 = critic_step(
            self.critic,
            self.critic_opt,
            obs,
            action,
            lambda q1, q2: (
                recoil_critic_loss(q1, target, self.expert_q, n)
                + recoil_critic_loss(q2, target, self.expert_q, n)
            ),
            self.device,
            self.precision,
        )

        soft_update_(self.critic_target, self.critic, self.tau)  # learner_imitate.py `target_update`
        self.num_updates += 1

        scalars = {
            "value_loss": value_loss,
            "v_pool": v[:n].mean(),
            "v_expert": v[n:].mean(),
            "critic_loss": critic_loss,
            "q_pool": q1[:n].mean(),
            "q_expert": q1[n:].mean(),
            "actor_loss": actor_loss,
            "adv": adv[:n].mean(),
            "adv_weight": weights[:n].mean(),
            "log_std": log_std.mean(),
        }
        return logged_scalars(scalars, lr)

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers, strings and the expert sampler's RNG state (a dict of ints).
    # -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = parts_state(implicit_parts(self))
        rng = self.expert_sampler.get_rng_state() if self.expert_sampler is not None else {}
        state.update(num_updates=self.num_updates, expert_rng=rng)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(implicit_parts(self), state, "ReCOIL", extra=("num_updates", "expert_rng"))
        self.num_updates = int(state["num_updates"])
        if self.expert_sampler is not None and state["expert_rng"]:
            self.expert_sampler.set_rng_state(dict(state["expert_rng"]))
