"""Score normalisation: D4RL's 100 * (score - random) / (expert - random), and per-task reference tables."""

from __future__ import annotations

import numpy as np

from common.errors import ConfigError


def normalized_score(score: float | np.ndarray, random: float, expert: float) -> float | np.ndarray:
    """100 * (score - random) / (expert - random) (Fu et al. 2020, D4RL, Sec. 5): 0 = random, 100 = expert.

    Works elementwise on arrays. Fails when the two reference returns coincide (nothing to scale by).
    """
    span = float(expert) - float(random)
    if not np.isfinite(span) or span == 0.0:
        raise ConfigError(
            f"reference scores random={random} and expert={expert} cannot normalise (need expert != random)"
        )
    if isinstance(score, np.ndarray):
        return 100.0 * (score - random) / span
    return 100.0 * (float(score) - float(random)) / span
