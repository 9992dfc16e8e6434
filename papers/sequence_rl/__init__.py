"""Sequence RL (Patel & Siegelmann, ICLR 2025): an actor that emits J actions per decision, trained through a
one-step dynamics model and a primitive-step critic ("temporal recall"): `agent.SRLAgent`, `loop`, `fas`."""
