"""Extreme Q-Learning, offline ("X-QL"): "Extreme Q-Learning: MaxEnt RL without Entropy".

Garg, Hejna, Geist, Ermon, ICLR 2023 (arXiv 2301.02328). `# Eq. N` tags use the numbering of the paper PDF the
authors ship with their code (Div99/XQL @dff09af docs/extreme_q_learning.pdf): Eq. 11 the Extreme-V (Gumbel)
loss, Eq. 12 the policy extraction, Eq. 14 the Q regression. The code
follows the authors' offline implementation, Div99/XQL @dff09af `offline/` (built on IQL's code):
`critic.py` (`gumbel_rescale_loss`, `update_v`, `update_q`), `actor.py` (`update`), `learner.py`
(`_update_jit`, `Learner`), `value_net.py`, `policy.py`, `train_offline.py` (flags, reward normalisation).

XQL's learner is IQL's with the value loss swapped, and f-DVL (papers/dual_rl) is XQL's with the value loss
swapped again: the networks, `prepare` (reward scale), `act` and the update live in
common/offline/implicit_value.py (`ImplicitValueAgent`); this file states XQL's value loss. One update, in
the official order (learner.py `_update_jit`, num_v_updates = 1):

  Eq. 11  V:  min_V E[e^z - z - 1],  z = (min(Q1', Q2')(s, a) - V(s)) / beta      (`value_loss` below)
  Eq. 12  pi: min_pi -E[min(exp(temperature * (min(Q1', Q2')(s, a) - V(s))), 100) log pi(a|s)], new V
  Eq. 14  Q:  min_Q sum_i huber_20(Q_i(s, a) - (r + gamma V(s'))), new V
          target critic: theta' <- tau theta + (1 - tau) theta'

V's inputs may add uniform random actions (`sample_random_times`) or noisy dataset actions (`action_noise`).
Nothing guards against inf/NaN: XQL's known instability (exp of a large (Q - V) / beta) stops the run as
`diverged` (common/session.py), as it should.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from common.errors import ConfigError
from common.offline.dual_losses import gumbel_loss
from common.offline.implicit_value import IMPLICIT_VALUE_KEYS, ImplicitValueAgent

# The Gumbel loss's keys (loss_temp = beta, max_clip = z's cap), then the shared learner's.
CFG_KEYS = ("loss_temp", "max_clip", *IMPLICIT_VALUE_KEYS)


class XQLAgent(ImplicitValueAgent):
    """Offline XQL: Gumbel-regression V, twin Q regressed on r + gamma V(s'), AWR policy
    (`common.agent.OfflineAgent`)."""

    owner = "XQL"
    cfg_keys = CFG_KEYS

    def configure_value_loss(self, cfg: DictConfig) -> None:
        if not float(cfg.loss_temp) > 0.0:
            raise ConfigError(f"paper.agent.loss_temp={cfg.loss_temp} must be positive (the Gumbel beta)")
        self.beta = float(cfg.loss_temp)  # hopper_replay.sh --temp
        self.max_clip = None if cfg.max_clip is None else float(cfg.max_clip)  # --max_clip

    def value_loss(self, diff: torch.Tensor) -> torch.Tensor:
        # Eq. 11 (Gumbel regression): L(V) = E[e^z - z - 1], z = (min(Q1', Q2')(s, a) - V(s)) / beta,
        # Q' the target critic; z clipped at max_clip and the loss rescaled by e^-max(z) (critic.py
        # `gumbel_rescale_loss`); its minimiser is the soft maximum beta log E_mu[e^(Q / beta)].
        return gumbel_loss(diff, self.beta, self.max_clip)
