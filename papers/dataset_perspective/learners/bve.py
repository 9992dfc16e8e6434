"""BVE: behaviour value estimation, SARSA on the dataset's own next actions (Gulcehre et al. 2021).

kschweig/OfflineRL @478661f source/agents/bve.py (`BVE`): one Q-network, no target network (the bootstrap
uses Q itself, without gradient), Huber loss, Adam; acts greedily on Q.
"""

from __future__ import annotations

import torch

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


class BVE(DiscreteLearner):
    name = "bve"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.q = self.net(self.num_actions)
        self.optimizer = self.adam(self.q)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs)

    def loss(self, batch: DiscreteBatch) -> torch.Tensor:
        # Eq. (BVE)  y = r + gamma (1 - done) Q(s', a'),  a' = the action the dataset takes in s'
        with torch.no_grad():
            next_q = self.q(batch.next_obs).gather(1, batch.next_action[:, None])[:, 0]
            target = batch.reward + batch.not_done * self.discount * next_q
        current = self.q(batch.obs).gather(1, batch.action[:, None])[:, 0]
        return huber(current, target)  # Huber(Q(s, a), y)

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        loss = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        return {"loss": float(loss.detach())}

    def parts(self):  # noqa: ANN201
        return {"q": self.q, "optimizer": self.optimizer}
