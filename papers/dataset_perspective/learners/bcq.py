"""Discrete BCQ (Fujimoto, Conti, Ghavamzadeh & Pineau 2019, "Benchmarking Batch Deep RL Algorithms",
Eq. 3-4).

kschweig/OfflineRL @478661f source/agents/bcq.py (after sfujim/BCQ discrete_BCQ.py): a Q-network
and a separate behaviour-cloning actor G(a|s) share one Adam. Only actions with
G(a|s) / max_a' G(a'|s) > tau = 0.3 are eligible for the max, in the target and when acting.
Loss = Huber TD + NLL of G + 0.01 * mean(logits^2).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


def eligible(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 3  mask_a = 1[G(a|s) / max_a' G(a'|s) > tau], from the actor's logits (B, A) -> float (B, A)."""
    probs = F.log_softmax(logits, dim=1).exp()
    return (probs / probs.max(1, keepdim=True)[0] > threshold).float()


def masked_argmax(q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """argmax over eligible actions (ineligible ones get -9e9, as upstream)."""
    return (mask * q + (1.0 - mask) * -9e9).argmax(dim=1)


class BCQ(DiscreteLearner):
    name = "bcq"

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.threshold = float(self.cfg.bcq_threshold)
        self.penalty = float(self.cfg.bcq_logit_penalty)
        self.q = self.net(self.num_actions)
        self.q_target = copy.deepcopy(self.q)
        self.actor = self.net(self.num_actions)  # seeded like the critic: both start equal (upstream)
        self.optimizer = self.adam(self.q, self.actor)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q with ineligible actions at -9e9: the greedy action is the masked argmax."""
        mask = eligible(self.actor(obs), self.threshold)
        return mask * self.q(obs) + (1.0 - mask) * -9e9

    def losses(self, batch: DiscreteBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            # Eq. 4  y = r + gamma (1 - done) Q_target(s', argmax_{a': mask} Q(s', a'))
            next_action = masked_argmax(
                self.q(batch.next_obs), eligible(self.actor(batch.next_obs), self.threshold)
            )
            next_q = self.q_target(batch.next_obs).gather(1, next_action[:, None])[:, 0]
            target = batch.reward + batch.not_done * self.discount * next_q
        current = self.q(batch.obs).gather(1, batch.action[:, None])[:, 0]
        logits = self.actor(batch.obs)
        q_loss = huber(current, target)
        a_loss = F.nll_loss(F.log_softmax(logits, dim=1), batch.action)  # behaviour cloning of G
        reg = self.penalty * logits.pow(2).mean()  # 1e-2 * logits^2
        return q_loss, a_loss, reg

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        q_loss, a_loss, reg = self.losses(batch)
        self.optimizer.zero_grad()
        (q_loss + a_loss + reg).backward()
        self.optimizer.step()
        self.iterations += 1
        if self.iterations % int(self.cfg.target_update_every) == 0:
            self.q_target.load_state_dict(self.q.state_dict())
        return {"loss": float(q_loss.detach()), "actor_loss": float(a_loss.detach())}

    def parts(self):  # noqa: ANN201
        return {"q": self.q, "q_target": self.q_target, "actor": self.actor, "optimizer": self.optimizer}
