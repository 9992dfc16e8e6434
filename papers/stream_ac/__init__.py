"""Stream AC(λ) (Elsayed et al., 2024): `papers.stream_ac.agent.StreamACAgent`."""
