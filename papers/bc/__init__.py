"""Behaviour cloning (Pomerleau, 1991; CORL's "BC" / "x% BC" baseline), offline from any D4RL-protocol
dataset: `agent.BCAgent`, run by `loop.train`."""
