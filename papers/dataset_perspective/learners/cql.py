"""CQL(H) for discrete actions (Kumar et al. 2020, Eq. 4 with the discrete log-sum-exp regulariser).

kschweig/OfflineRL @478661f source/agents/cql.py (`CQL`): DQN's double-Q Huber loss plus
alpha * mean(logsumexp_a Q(s, a) - Q(s, a_data)), alpha = 0.1; one Adam step on the sum.
"""

from __future__ import annotations

import copy

import torch

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


class CQL(DiscreteLearner):
    name = "cql"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.alpha = float(self.cfg.cql_alpha)
        self.q = self.net(self.num_actions)
        self.q_target = copy.deepcopy(self.q)
        self.optimizer = self.adam(self.q)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs)

    def losses(self, batch: DiscreteBatch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # the double-DQN target of dqn.py
            next_action = self.q(batch.next_obs).argmax(1, keepdim=True)
            next_q = self.q_target(batch.next_obs).gather(1, next_action)[:, 0]
            target = batch.reward + batch.not_done * self.discount * next_q
        current_qs = self.q(batch.obs)
        current = current_qs.gather(1, batch.action[:, None])[:, 0]
        td_loss = huber(current, target)
        # Eq. 4 (discrete)  R = alpha * E_{(s, a) ~ D} [ log sum_a' exp Q(s, a') - Q(s, a) ]
        reg = (self.alpha * (torch.logsumexp(current_qs, dim=1) - current)).mean()
        return td_loss, reg

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        td_loss, reg = self.losses(batch)
        self.optimizer.zero_grad()
        (td_loss + reg).backward()
        self.optimizer.step()
        self.iterations += 1
        if self.iterations % int(self.cfg.target_update_every) == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        return {"loss": float(td_loss.detach()), "cql_reg": float(reg.detach())}

    def parts(self):  # noqa: ANN201
        return {"q": self.q, "q_target": self.q_target, "optimizer": self.optimizer}
