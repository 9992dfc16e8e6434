"""MCE: Monte-Carlo estimation, regression of Q(s, a) on the dataset's discounted return-to-go.

kschweig/OfflineRL @478661f source/agents/mce.py (`MCE`) with `ReplayBuffer.calc_remaining_reward(discount)`
(source/utils/buffer.py; ex_01.py `use_remaining_reward=(agent == "MCE")`): Huber(Q(s, a), G), no
bootstrap, no target network; acts greedily on Q.
"""

from __future__ import annotations

import numpy as np
import torch

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


def returns_to_go(rewards: np.ndarray, dones: np.ndarray, discount: float) -> np.ndarray:
    """Eq. (MC)  G_t = r_t + gamma G_{t+1}, restarted at every `done` row (`calc_remaining_reward`); rows
    after the last `done` sum what follows them in the dataset."""
    out = np.zeros(len(rewards), np.float64)
    g = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if dones[i]:
            g = 0.0
        g = g + float(rewards[i])
        out[i] = g
        g *= discount
    return out.astype(np.float32)


class MCE(DiscreteLearner):
    name = "mce"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.q = self.net(self.num_actions)
        self.optimizer = self.adam(self.q)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs)

    def epsilon(self, eval_mode: bool) -> float:
        return self.eval_eps  # mce.py acts with eval_eps always (it has no decay schedule)

    def loss(self, batch: DiscreteBatch) -> torch.Tensor:
        current = self.q(batch.obs).gather(1, batch.action[:, None])[:, 0]
        return huber(current, batch.mc_return)  # Huber(Q(s, a), G)

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        loss = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        return {"loss": float(loss.detach())}

    def parts(self):  # noqa: ANN201
        return {"q": self.q, "optimizer": self.optimizer}
