"""TD3+BC (Fujimoto & Gu, 2021), offline RL from any D4RL-protocol dataset: `agent.TD3BCAgent`."""
