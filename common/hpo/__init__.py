"""Hyperparameter optimisation with Optuna, called directly (not through hydra-optuna-sweeper, which pins
optuna<3 and cannot prune: docs/hpo-and-slurm.md), and declarative seed sweeps.

- `space`: search spaces (`conf/hpo/*.yaml`) → distributions → Hydra overrides.
- `study`: the protocol of how-to-autorl (Eimer et al., ICML 2023): tune on tuning seeds (objective = mean
  final score), prune on intermediate evaluations, re-run the best config on disjoint test seeds; journal-file
  storage in the study directory, local or SLURM workers, resumable.
- `report`: best parameters, tuning-vs-test gap, optimisation history, importances, as files and plots.
- `slurm`: checks and one-line failures for submitit on SLURM.
- `sweep`: `sweeps/*.yaml` → a Hydra multirun.

`python -m common.hpo conf/hpo/sac.yaml env=hopper --trials 50` (see `python -m common.hpo --help`).
"""
