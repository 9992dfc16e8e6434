"""f-DVL (Dual V-Learning with an f-divergence), the offline-RL method of "Dual RL: Unification and New
Methods for Reinforcement and Imitation Learning", Sikchi, Zheng, Zhang, Niekum, ICLR 2024 (arXiv 2302.08560).

f-DVL is XQL's learner (Garg et al. 2023) with the Gumbel value loss replaced by the loss of a chosen
f-divergence (the paper's f-DVL): chi-square or total variation, or reverse KL, which is XQL itself. The code
follows the authors' implementation, hari-sikchi/DVL @4b7cf11 `offline/` (built on XQL's and IQL's code):
`critic.py` (`chi_square_loss`, `total_variation_loss`, `reverse_kl_loss`, `update_v`, `update_q`),
`actor.py` (`update`), `learner.py` (`_update_jit`, `Learner`), `train_offline.py` (flags, rewards).

The networks, `prepare` (reward scale), `act` and the update are that shared learner,
common/offline/implicit_value.py (`ImplicitValueAgent`); this file states f-DVL's value loss. One update, in
the official order (learner.py `_update_jit`):

  V:  min_V E[lam f*_p(Q - V) - (1 - lam)(Q - V)],  Q = min(Q1', Q2')(s, a)       (`value_loss` below)
  pi: AWR, min_pi -E[min(exp(temperature * (Q - V(s))), 100) log pi(a|s)], new V   (actor.py `update`)
  Q:  min_Q sum_i huber_20(Q_i(s, a) - (r + gamma V(s'))), new V                  (critic.py `update_q`)
      target critic: theta' <- tau theta + (1 - tau) theta'

Nothing guards inf/NaN: a diverging run stops as `diverged` (common/session.py).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from common.errors import ConfigError
from common.offline.dual_losses import F_DIVERGENCES, f_dvl_loss
from common.offline.implicit_value import IMPLICIT_VALUE_KEYS, ImplicitValueAgent

# The f-divergence loss's keys (f, f_temp = lambda or beta, max_clip for reverse_kl), then the shared
# learner's.
CFG_KEYS = ("f", "f_temp", "max_clip", *IMPLICIT_VALUE_KEYS)


class FDVLAgent(ImplicitValueAgent):
    """f-DVL: V by an f-divergence loss, twin Q regressed on r + gamma V(s'), AWR policy
    (`common.agent.OfflineAgent`)."""

    owner = "f-DVL"
    cfg_keys = CFG_KEYS

    def configure_value_loss(self, cfg: DictConfig) -> None:
        if cfg.f not in F_DIVERGENCES:
            raise ConfigError(f"paper.f={cfg.f!r} must be one of {', '.join(F_DIVERGENCES)}")
        lam_ok = 0.0 < float(cfg.f_temp) <= 1.0 if cfg.f != "reverse_kl" else float(cfg.f_temp) > 0.0
        if not lam_ok:
            raise ConfigError(
                f"paper.agent.f_temp={cfg.f_temp} must be in (0, 1] (lambda) for f={cfg.f}, positive (beta) "
                f"for reverse_kl"
            )
        self.f = str(cfg.f)  # train_offline.py --f
        self.f_temp = float(cfg.f_temp)  # --temp
        self.max_clip = None if cfg.max_clip is None else float(cfg.max_clip)  # --max_clip (reverse_kl)

    def value_loss(self, diff: torch.Tensor) -> torch.Tensor:
        # f-DVL's value objective: min_V E_{s,a~d}[lam f*_p(Q(s, a) - V(s)) - (1 - lam)(Q(s, a) - V(s))],
        # Q = min(Q1', Q2') of the target critic, lam = --temp (critic.py `update_v`), d = diff:
        #   chi_square:      lam * max(d + d^2 / 4, 0) - (1 - lam) d
        #   total_variation: lam * max(d, 0) - (1 - lam) d
        #   reverse_kl:      XQL's rescaled Gumbel loss with beta = --temp and z clipped at max_clip
        return f_dvl_loss(self.f, diff, self.f_temp, self.max_clip)
