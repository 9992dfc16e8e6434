"""MEX-MF: "Maximize to Explore: One Objective Function Fusing Estimation, Planning, and Exploration".

Zhiyuan Liu, Miao Lu, Wei Xiong, Han Zhong, Hao Hu, Shenao Zhang, Sirui Zheng, Zhuoran Yang, Zhaoran Wang,
NeurIPS 2023 (arXiv 2305.18258). MEX fuses estimation and planning into one objective: the value of the
greedy policy under a hypothesis minus η⁻¹ times the hypothesis's estimation error. Its model-free deep
version (MEX-MF) keeps TD3 whole and changes only the critic's loss: the TD error, minus η times the critic's
value of the policy's action, measured against a log-sum-exp baseline. Everything below follows the authors'
code, agentification/MEX @36e063c `MEX_MF/IO.py` (`IO.train`, with `use_baseline`) run as
`MEX_MF/run_experiments.sh` does (`--policy IO --eta 0.005 --use_baseline --sparse`).

With Q_i the twin critics (i = 1, 2), y TD3's clipped double-Q target, (s, a, s') a replay batch, π the
current actor and ā ~ U(-1, 1) a random action:

    L(θ) = Σ_i MSE(Q_i(s, a), y)                                                     (TD3's critic loss)
           − η · mean[ Σ_i ( Q_i(s, π(s)) − LSE( Q_1(s, a), Q_i(s, π(s')), Q_i(s, ā) ) ) ]   (optimism)

The optimism term pushes up the value of the greedy action (the paper's "maximise" part) relative to a soft
maximum over a data action, the policy's next action and a random action, so the critic cannot raise every
value at once. Without the baseline (`baseline: false`) the term is η · mean(Q_1(s, a) + Q_2(s, a)).

Two details are kept exactly as upstream runs them (marked below): the first LSE entry is Q_1(s, a) for both
critics (upstream builds `cat_Q2` from `current_Q1`), and π(s') is evaluated at s, not s' (upstream
`critic(state, pi_action_next)`). η is a constant (upstream has no schedule).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from common.envs.base import EnvSpec
from common.errors import ConfigError
from papers.td3.agent import CriticTerm, TD3Agent


def optimism_term(eta: float, baseline: bool) -> CriticTerm:
    """MEX's term of the critic loss, −η · (optimism), as a `papers.td3.agent.CriticTerm`."""

    def term(
        agent: TD3Agent,
        obs: torch.Tensor,
        action: torch.Tensor,
        next_obs: torch.Tensor,
        q1: torch.Tensor,
        q2: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not baseline:  # IO.py without --use_baseline: the data actions' values
            optimism = (q1 + q2).mean()
            return -eta * optimism, {"optimism": optimism}
        with torch.no_grad():  # the term trains the critics only (upstream's actor gradients are discarded)
            pi = agent.actor(obs).float()
            pi_next = agent.actor(next_obs).float()
            random_action = torch.rand_like(action) * 2.0 - 1.0  # U(-1, 1), IO.py `torch.rand(...)*2.-1.`
        q_pi_1, q_pi_2 = (q.float() for q in agent.critic(obs, pi))
        # upstream quirk kept: π(s') is scored at s (IO.py `self.critic(state, pi_action_next)`)
        q_next_1, q_next_2 = (q.float() for q in agent.critic(obs, pi_next))
        q_rand_1, q_rand_2 = (q.float() for q in agent.critic(obs, random_action))
        # upstream quirk kept: both soft maxima start from Q_1(s, a) (IO.py builds cat_Q2 from current_Q1)
        lse_1 = torch.logsumexp(torch.cat([q1, q_next_1, q_rand_1], dim=-1), dim=-1)
        lse_2 = torch.logsumexp(torch.cat([q1, q_next_2, q_rand_2], dim=-1), dim=-1)
        # IO.py subtracts a (B,) LSE from a (B, 1) Q and averages the (B, B) result: the same number as the
        # difference of the two means, which is what is computed here.
        optimism = (q_pi_1.mean() - lse_1.mean()) + (q_pi_2.mean() - lse_2.mean())
        scalars = {"optimism": optimism, "q_pi": q_pi_1.mean(), "q_random": q_rand_1.mean()}
        return -eta * optimism, scalars

    return term


def MEXAgent(cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> TD3Agent:
    """TD3 (every value of conf/paper/td3.yaml) with MEX's critic term; `paper.agent.eta`, `.baseline`."""
    for key in ("eta", "baseline"):
        if key not in cfg:
            raise ConfigError(f"paper.agent.{key} is missing (MEX needs eta and baseline)")
    eta = float(cfg.eta)
    if eta < 0:
        raise ConfigError(f"paper.agent.eta={eta} must be >= 0 (0 is plain TD3)")
    return TD3Agent(cfg, spec, device, precision, critic_term=optimism_term(eta, bool(cfg.baseline)))
