"""Model-Based Transfer Learning (MBTL) for contextual RL (Cho et al., NeurIPS 2024)."""
