"""Conservative Q-Learning (Kumar et al., 2020), offline RL with CORL's settings: `agent.CQLAgent`."""
