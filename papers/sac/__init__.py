"""Soft Actor-Critic (Haarnoja et al., 2018) from states, as SynthER's online baseline: `agent.SACAgent`."""
