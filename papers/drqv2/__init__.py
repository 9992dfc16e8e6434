"""DrQ-v2 (Yarats et al., 2021): augmented DDPG from pixels; the agent is `papers.drqv2.agent.DrQV2Agent`."""
