"""Distributional DP with stock augmentation (Ávila Pires et al. 2025, "Optimizing Return Distributions with
Distributional Dynamic Programming") on tabular MDPs: `stock.augment`, `dp.AugmentedDP` (value and policy
iteration), `objectives.Objective`, `brute_force`, run by `loop.run`."""
