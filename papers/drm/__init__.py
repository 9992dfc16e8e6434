"""DrM (Xu et al., ICLR 2024): DrQ-v2 steered by the actor's dormant ratio; `papers.drm.agent.DrMAgent`."""
