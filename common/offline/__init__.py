"""Offline RL plumbing: datasets in Minari format (written by `papers/d4rl`), and the offline run loop."""
