"""Stop Regressing (Farebrother et al., ICML 2024): DQN's agent with the HL-Gauss loss (config only)."""
