"""CRR: critic regularised regression (Wang et al. 2020, Eq. 1-3) for discrete actions.

kschweig/OfflineRL @478661f source/agents/crr.py (`CRR`): per update, first the policy, then the critic.
Advantage A(s, a) = Q(s, a) - mean_{j=1..m} Q(s, a_j), a_j ~ pi(.|s), m = 4 ("mean style"); the active
weighting is binary, f = 1[A(s, a) > 0] (heaviside, 0 at 0); the exp style exp(A / beta), beta = 1, is
available as crr_weighting=exp. Critic: y = r + gamma (1 - done) Q_target(s', a'), a' ~ pi_target(.|s');
targets (critic and policy) copied every 100 updates. Separate Adams; acts by sampling from pi.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner, huber


def advantage_weights(advantage: torch.Tensor, weighting: str, beta: float) -> torch.Tensor:
    """Eq. 3  f(Q, pi, s, a): binary 1[A > 0] (upstream's active choice) or exp(A / beta)."""
    if weighting == "binary":
        return torch.heaviside(advantage, torch.zeros((), device=advantage.device))
    return torch.exp(advantage / beta)


class CRR(DiscreteLearner):
    name = "crr"
    greedy = False

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.weighting, self.beta, self.m = (
            str(self.cfg.crr_weighting),
            float(self.cfg.crr_beta),
            int(self.cfg.crr_samples),
        )
        self.q = self.net(self.num_actions)
        self.q_target = copy.deepcopy(self.q)
        self.actor = self.net(self.num_actions)
        self.actor_target = copy.deepcopy(self.actor)
        self.optimizer = self.adam(self.q)
        self.p_optim = self.adam(self.actor)

    def policy_probs(self, obs: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.actor(obs), dim=-1)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(obs)

    def advantage(self, obs: torch.Tensor) -> torch.Tensor:
        """Eq. 2 (mean style)  A(s, .) = Q(s, .) - 1/m sum_j Q(s, a_j),  a_j ~ pi(.|s)."""
        with torch.no_grad():
            qs = self.q(obs)
            dist = torch.distributions.Categorical(F.softmax(self.actor(obs), dim=1))
            baseline = torch.stack([qs.gather(1, dist.sample()[:, None]) for _ in range(self.m)]).mean(0)
            return qs - baseline

    def policy_loss(self, batch: DiscreteBatch) -> torch.Tensor:
        weight = advantage_weights(self.advantage(batch.obs), self.weighting, self.beta)
        weight = weight.gather(1, batch.action[:, None])[:, 0]
        # Eq. 1  L_pi = -E_D [ f(Q, pi, s, a) log pi(a | s) ]
        return (F.cross_entropy(self.actor(batch.obs), batch.action, reduction="none") * weight).mean()

    def critic_loss(self, batch: DiscreteBatch) -> torch.Tensor:
        with torch.no_grad():
            dist = torch.distributions.Categorical(F.softmax(self.actor_target(batch.next_obs), dim=1))
            next_q = self.q_target(batch.next_obs).gather(1, dist.sample()[:, None])[:, 0]
            target = batch.reward + batch.not_done * self.discount * next_q
        current = self.q(batch.obs).gather(1, batch.action[:, None])[:, 0]
        return huber(current, target)

    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        p_loss = self.policy_loss(batch)
        self.p_optim.zero_grad()
        p_loss.backward()
        self.p_optim.step()
        q_loss = self.critic_loss(batch)
        self.optimizer.zero_grad()
        q_loss.backward()
        self.optimizer.step()
        self.iterations += 1
        if self.iterations % int(self.cfg.target_update_every) == 0:
            self.q_target.load_state_dict(self.q.state_dict())
            self.actor_target.load_state_dict(self.actor.state_dict())
        return {"loss": float(q_loss.detach()), "actor_loss": float(p_loss.detach())}

    def parts(self):  # noqa: ANN201
        return {
            "q": self.q,
            "q_target": self.q_target,
            "actor": self.actor,
            "actor_target": self.actor_target,
            "optimizer": self.optimizer,
            "p_optim": self.p_optim,
        }
