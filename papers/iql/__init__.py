"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021), offline RL on D4RL-style data: `agent.IQLAgent`."""
