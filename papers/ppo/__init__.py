"""PPO (Schulman et al., 2017) with CleanRL's MuJoCo and classic-control settings: `agent.PPOAgent`."""
