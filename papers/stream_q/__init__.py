"""Stream Q(λ) (Elsayed et al., 2024): `papers.stream_q.agent.StreamQAgent`."""
