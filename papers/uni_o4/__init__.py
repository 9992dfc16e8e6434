"""Uni-O4 (Lei et al., ICLR 2024): offline multi-step PPO with OPE gating, then online PPO fine-tuning."""
