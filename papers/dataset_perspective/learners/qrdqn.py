"""QR-DQN (Dabney et al. 2018) as kschweig/OfflineRL @478661f source/agents/qrdqn.py writes it.

`QrCritic` (critic.py): the Critic's output reshaped to (B, A, N) quantiles, N = 50; the greedy value is
their mean. Target: a' = argmax_a mean_j theta_j(s', a) from the online net, the target net's quantiles at
a'. The quantile Huber loss keeps upstream's exact form (common/ has no quantile loss, so it is written
here): tau_k = k / N for k = 1..N (not the midpoints (2k - 1) / 2N of Dabney et al., Lemma 2), and the
weight |tau - 1[delta < 0]| takes tau along the *target* axis j; summed over the current-quantile axis i,
averaged over j and the batch. Both are upstream's choices and are kept (README).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner


def quantile_huber_loss(current: torch.Tensor, target: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Upstream's quantile loss. current (B, N) quantiles at a, target (B, N) target quantiles, tau (N,).

    Eq. 10 (as upstream):  delta_ij = T theta_j - theta_i,
    L = mean_b mean_j sum_i |tau_j - 1[delta_ij < 0]| * Huber_1(delta_ij).
    """
    n = current.shape[1]
    cur = current[:, :, None].expand(-1, n, n)  # [b, i, j] = theta_i
    tgt = target[:, None, :].expand(-1, n, n)  # [b, i, j] = T theta_j
    delta = tgt - cur
    hub = F.smooth_l1_loss(cur, tgt, reduction="none")
    weight = (tau - (delta.detach() < 0).float()).abs()  # tau broadcast along j (upstream)
    return (weight * hub).sum(dim=1).mean(dim=1).mean()


class QRDQN(DiscreteLearner):
    name = "qrdqn"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.n = int(self.cfg.qrdqn_quantiles)
        self.tau = torch.arange(1, self.n + 1, dtype=torch.float32, device=self.device) / self.n
        self.q = self.net(self.num_actions * self.n)
        self.q_target = copy.deepcopy(self.q)
        self.optimizer = self.adam(self.q)

    def quantiles(self, net: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
        return net(obs).reshape(len(obs), self.num_actions, self.n)  # QrCritic: (B, A, N)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.quantiles(self.q, obs).mean(dim=2)

    def loss(self, batch: DiscreteBatch) -> torch.Tensor:
        with torch.no_grad():
            next_action = self.values(batch.next_obs).argmax(1)
            rows = torch.arange(len(next_action), device=self.device)
            next_theta = self.quantiles(self.q_target, batch.next_obs)[rows, next_action]  # (B, N)
            # Eq. (distributional Bellman)  T theta_j = r + gamma (1 - done) theta'_j(s', a')
            target = batch.reward[:, None] + batch.not_done[:, None] * self.discount * next_theta
        rows = torch.arange(len(batch.action), device=self.device)
        current = self.quantiles(self.q, batch.obs)[rows, batch.action]
        return quantile_huber_loss(current, target, self.tau)

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
