"""DQN (Mnih et al. 2015) as upstream writes it: a double-DQN target (van Hasselt et al. 2016, Eq. 4).

kschweig/OfflineRL @478661f source/agents/dqn.py (`DQN`): the online net picks a' = argmax Q(s', .), the
target net (hard copy every 100 updates) evaluates it; Huber loss, Adam. This class is also the behavioural
policy of the online run (train_online.py `behavioral = "DQN"`), acting epsilon-greedily.
"""

from __future__ import annotations

import copy

import torch

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


class DQN(DiscreteLearner):
    name = "dqn"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.q = self.net(self.num_actions)
        self.q_target = copy.deepcopy(self.q)
        self.optimizer = self.adam(self.q)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs)

    def loss(self, batch: DiscreteBatch) -> torch.Tensor:
        # Eq. 4 (double DQN)  y = r + gamma (1 - done) Q_target(s', argmax_a Q(s', a))
        with torch.no_grad():
            next_action = self.q(batch.next_obs).argmax(1, keepdim=True)
            next_q = self.q_target(batch.next_obs).gather(1, next_action)[:, 0]
            target = batch.reward + batch.not_done * self.discount * next_q
        current = self.q(batch.obs).gather(1, batch.action[:, None])[:, 0]
        return huber(current, target)

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        loss = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        if self.iterations % int(self.cfg.target_update_every) == 0:  # hard target update
            self.q_target.load_state_dict(self.q.state_dict())
        return {"loss": float(loss.detach())}

    def parts(self):  # noqa: ANN201
        return {"q": self.q, "q_target": self.q_target, "optimizer": self.optimizer}
