"""Snapshot RL's S3RL (Zhao et al., 2024): students start at clustered teacher states (`loop`, `teacher`)."""
