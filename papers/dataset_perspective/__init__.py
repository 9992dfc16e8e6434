"""A Dataset Perspective on Offline RL (Schweighofer et al., CoLLAs 2022)."""
