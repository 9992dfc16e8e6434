"""DQN (Mnih et al., 2015) with n-step, double-Q and pluggable value losses: `agent.DQNAgent`."""
