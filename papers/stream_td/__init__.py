"""Stream TD(λ) (Elsayed et al., 2024): streaming value prediction; `papers.stream_td.agent.StreamTDAgent`."""
