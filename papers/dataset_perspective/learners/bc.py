"""BC: behaviour cloning of the dataset's discrete actions by cross-entropy (Pomerleau 1991).

kschweig/OfflineRL @478661f source/agents/bc.py (`BehavioralCloning`): an `Actor` of logits, Adam, and a
policy that *samples* from softmax(logits), when evaluated too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner


class BC(DiscreteLearner):
    name = "bc"
    greedy = False

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.actor = self.net(self.num_actions)
        self.optimizer = self.adam(self.actor)

    def policy_probs(self, obs: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.actor(obs), dim=-1)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        # Eq. (BC)  L = E_{(s, a) ~ D} [ -log pi(a | s) ]  (nn.CrossEntropyLoss on the logits)
        loss = F.cross_entropy(self.actor(batch.obs), batch.action)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        return {"loss": float(loss.detach())}

    def parts(self):  # noqa: ANN201
        return {"actor": self.actor, "optimizer": self.optimizer}
