"""D4RL-protocol dataset generator (a plugin whose loop writes datasets instead of training a final agent)."""
