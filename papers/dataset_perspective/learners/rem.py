"""REM: random ensemble mixture (Agarwal et al. 2020, Eq. 6), 200 heads.

kschweig/OfflineRL @478661f source/agents/rem.py and critic.py (`RemCritic`): one body, K x A outputs. In
training mode every forward pass draws its own convex weights alpha_k = u_k / sum u, u ~ U(0, 1)^K and
returns sum_k alpha_k Q_k; in eval mode the heads' mean. Upstream's update makes three training-mode passes
(online net at s' to choose a', target net at s', online net at s), so each draws its own alpha (Agarwal et
al. use one alpha per minibatch for both sides: upstream's form is kept, README). Double-DQN target, Huber.
"""

from __future__ import annotations

import copy

import torch

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


def mixture(heads: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. 6  sum_k alpha_k Q_k(s, .): heads (B, K, A), alpha (K,) on the simplex -> (B, A)."""
    return (heads * alpha.view(1, -1, 1)).sum(dim=1)


def random_convex_weights(k: int, device: torch.device) -> torch.Tensor:
    """alpha = u / sum(u), u ~ U(0, 1)^K (RemCritic.forward, torch's RNG)."""
    u = torch.rand(k, device=device)
    return u / u.sum()


class REM(DiscreteLearner):
    name = "rem"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.k = int(self.cfg.rem_heads)
        self.q = self.net(self.num_actions * self.k)
        self.q_target = copy.deepcopy(self.q)
        self.optimizer = self.adam(self.q)

    def heads(self, net: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
        return net(obs).view(len(obs), self.k, self.num_actions)  # RemCritic: (B, K, A)

    def mixed(self, net: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """A training-mode pass: a fresh random convex combination of the heads."""
        return mixture(self.heads(net, obs), random_convex_weights(self.k, self.device))

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.heads(self.q, obs).mean(dim=1)  # eval mode: the mean of the heads

    def loss(self, batch: DiscreteBatch) -> torch.Tensor:
        with torch.no_grad():
            next_action = self.mixed(self.q, batch.next_obs).argmax(1, keepdim=True)
            next_q = self.mixed(self.q_target, batch.next_obs).gather(1, next_action)[:, 0]
            target = batch.reward + batch.not_done * self.discount * next_q
        current = self.mixed(self.q, batch.obs).gather(1, batch.action[:, None])[:, 0]
        return huber(current, target)

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        loss = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        if self.iterations % int(self.cfg.target_update_every) == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        return {"loss": float(loss.detach())}

    def parts(self):  # noqa: ANN201
        return {"q": self.q, "q_target": self.q_target, "optimizer": self.optimizer}
