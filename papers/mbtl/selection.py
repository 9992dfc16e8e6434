"""MBTL's sequential source-task selection and its baselines, run on a transfer matrix.

Model-Based Transfer Learning (Cho, Jayawardana, Li, Wu; NeurIPS 2024, arXiv 2408.04498). Every formula and
constant follows the official code, jhoon-cho/MBTL @671f0e0 `MBTL/utils.py` (`MBTL(...)` with
`acquisition_function='new_ucb_beta_log'`, `gap_function='linear'`, as `MBTL/collect_result.py` calls it) and
the baselines of `collect_result.py`. The equation numbers below are this file's (listed here); the paper
states them in Sec. 4 (generalization gap, GP set point, acquisition):

    V[i, j]   the transfer matrix: the normalised return of the policy trained on context i, run zero-shot
              on context j (rows: sources, columns: targets); normalised as (R - lower) / (upper - lower)
              (utils.py `import_data`).
    x_i       context i's position: its index on MBTL's 100-point grid (the official code's `deltas` are the
              CSV's column indices), so the slope is per grid step.
    Eq. 1     generalised performance after training sources S: J_S(j) = max_{s in S} V[s, j]; the curve
              reported at step k is mean_j J_{S_k}(j) (`collect_J_matrix`, `J_transfer.mean(axis=0)`).
    Eq. 2     linear generalization gap: V̂[i, j] = max(V[i, i] - θ |x_i - x_j|, 0) (gap_function 'linear');
              θ fitted, when asked, by least squares of |V[i, j] - V[i, i]| on |x_i - x_j|
              (gap_function 'linear_estimated').
    Eq. 3     GP set point: μ, σ from a GaussianProcessRegressor, kernel C(1, (1e-3, 1e3)) * RBF(1, (1e-2,
              1e2)), alpha = noise_std², n_restarts_optimizer 9, fitted on (x_{s_l}, J_{S_l}(s_l)), l < k.
    Eq. 4     acquisition at step k >= 1: a(i) = mean_j max(μ(i) + β_k σ(i) - θ |x_i - x_j| - J⁰_k(j), 0),
              β_k = sqrt(log(k + 1)), J⁰_k(j) the best observed transfer to j so far (the official
              `V_obs_tmp.max(axis=0)`: untrained rows count as 0); the next source is the best-scoring
              context not yet trained. Step 0 trains the context nearest the middle of the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.errors import ConfigError


@dataclass
class Selection:
    """A strategy's sources in training order and its curve: mean generalised performance after each."""

    sources: list[int]
    curve: list[float]
    extra: dict[str, list[float]] = field(default_factory=dict)


def check_matrix(matrix: np.ndarray) -> np.ndarray:
    """`matrix` as a float (n, n) array with n >= 2 and finite entries (one-line ConfigErrors)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ConfigError(f"a transfer matrix must be square with >= 2 contexts, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ConfigError("the transfer matrix has non-finite entries; re-measure or drop those contexts")
    return m


def normalise(returns: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """(R - lower) / (upper - lower), utils.py `import_data`."""
    if not upper > lower:
        raise ConfigError(f"normalisation bounds need upper > lower, got [{lower}, {upper}]")
    return (np.asarray(returns, np.float64) - lower) / (upper - lower)


def generalised_curve(matrix: np.ndarray, sources: list[int]) -> list[float]:
    """# Eq. 1: mean_j max_{s in sources[:k+1]} V[s, j] for each k (`collect_J_matrix(...).mean(axis=0)`)."""
    best = np.maximum.accumulate(matrix[np.asarray(sources)], axis=0)  # (k, targets): best source so far
    return [float(v) for v in best.mean(axis=1)]


def gap_estimate(diagonal: np.ndarray, positions: np.ndarray, slope: float) -> np.ndarray:
    """# Eq. 2: V̂[i, j] = max(V[i, i] - θ |x_i - x_j|, 0)."""
    distance = np.abs(positions[:, None] - positions[None, :])
    return np.maximum(diagonal[:, None] - slope * distance, 0.0)


def fit_gap_slope(matrix: np.ndarray, positions: np.ndarray, rows: list[int] | None = None) -> float:
    """# Eq. 2's θ by least squares with an intercept (np.polyfit degree 1, as 'linear_estimated') of the gap
    |V[i, j] - V[i, i]| on the distance |x_i - x_j|, pooled over source rows `rows` (default: all)."""
    rows = list(range(len(matrix))) if rows is None else rows
    dist = np.concatenate([np.abs(positions[i] - positions) for i in rows])
    gap = np.concatenate([np.abs(matrix[i] - matrix[i, i]) for i in rows])
    return float(np.polyfit(dist, gap, 1)[0])


def acquisition(
    mu: np.ndarray, sigma: np.ndarray, beta: float, positions: np.ndarray, best_seen: np.ndarray, slope: float
) -> np.ndarray:
    """# Eq. 4: a(i) = mean_j max(μ(i) + β σ(i) - θ |x_i - x_j| - J⁰(j), 0), the expected gain in generalised
    performance from training context i, its transfer to j predicted by the linear gap (Eq. 2)."""
    optimistic = mu + beta * sigma
    gain = optimistic[:, None] - slope * np.abs(positions[:, None] - positions[None, :]) - best_seen[None, :]
    return np.maximum(gain, 0.0).mean(axis=1)


def _nearest(positions: np.ndarray, value: float) -> int:
    return int(np.abs(positions - value).argmin())  # first of ties, as np.argmin in utils.py


def _first_untrained(scores: np.ndarray, trained: list[int]) -> int:
    for i in np.argsort(-scores, kind="stable"):  # highest first; ties: the lower index
        if int(i) not in trained:
            return int(i)
    raise ConfigError("every context is already trained: ask for at most as many steps as contexts")


def mbtl(
    matrix: np.ndarray,
    positions: np.ndarray,
    steps: int,
    *,
    slope: float,
    noise_std: float,
    n_restarts: int,
    seed: int,
) -> Selection:
    """MBTL-GP with the linear gap and the β_k = sqrt(log(k + 1)) UCB acquisition (module docstring)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF
    from sklearn.gaussian_process.kernels import ConstantKernel as C

    V = check_matrix(matrix)
    n, x = len(V), np.asarray(positions, np.float64)
    if not 1 <= steps <= n:
        raise ConfigError(f"MBTL selects 1..{n} sources here, asked for {steps}")
    sources: list[int] = []
    J = np.zeros((n, steps))  # J[j, k]: generalised performance on target j after step k (Eq. 1)
    acquisitions: list[list[float]] = []
    for k in range(steps):
        if k == 0:
            pick = _nearest(x, (x.min() + x.max()) / 2)  # the middle of the context range
        else:
            # Eq. 3: the GP over the training performance observed at each trained source
            kernel = C(1.0, (1e-3, 1e3)) * RBF(length_scale=1.0, length_scale_bounds=(1e-2, 1e2))
            gp = GaussianProcessRegressor(
                kernel=kernel, alpha=noise_std**2, n_restarts_optimizer=n_restarts, random_state=seed
            )
            gp.fit(x[sources].reshape(-1, 1), np.array([J[s, step] for step, s in enumerate(sources)]))
            mu, sigma = gp.predict(x.reshape(-1, 1), return_std=True)
            observed = np.zeros((n, n))  # the official V_obs_tmp: untrained rows stay 0
            observed[sources] = V[sources]
            scores = acquisition(mu, sigma, np.sqrt(np.log(k + 1)), x, observed.max(axis=0), slope)
            acquisitions.append([float(a) for a in scores])
            pick = _first_untrained(scores, sources)
        sources.append(pick)
        J[:, k] = V[pick] if k == 0 else np.maximum(V[pick], J[:, k - 1])  # Eq. 1
    extra = {"acquisition_last": acquisitions[-1]} if acquisitions else {}
    return Selection(sources, [float(v) for v in J.mean(axis=0)], extra)


def independent(matrix: np.ndarray, steps: int) -> Selection:
    """Every context trained on itself: mean diagonal, flat (collect_result.py `exhaustive_training`)."""
    value = float(np.mean(np.diag(matrix)))
    return Selection(list(range(len(matrix))), [value] * steps)


def multitask(returns_per_target: np.ndarray, steps: int) -> Selection:
    """One policy trained across all contexts, zero-shot on each: its mean, flat."""
    return Selection([], [float(np.mean(returns_per_target))] * steps)


def oracle_transfer(matrix: np.ndarray, steps: int) -> Selection:
    """Every target served by its best source: the upper bound, flat (`oracle_transfer`)."""
    return Selection([], [float(matrix.max(axis=0).mean())] * steps)


def sequential_oracle(matrix: np.ndarray, steps: int) -> Selection:
    """Greedy with the full matrix known: each step adds the source that raises Eq. 1 most
    (collect_result.py `sequential_oracle_training`)."""
    n = len(matrix)
    sources = [int(matrix.mean(axis=1).argmax())]
    for _ in range(steps - 1):
        rest = [i for i in range(n) if i not in sources]
        gains = [matrix[sources + [i]].max(axis=0).mean() for i in rest]
        sources.append(rest[int(np.argmax(gains))])
    return Selection(sources, generalised_curve(matrix, sources))


def greedy(positions: np.ndarray, matrix: np.ndarray, steps: int) -> Selection:
    """The greedy (`greedy_temporal_transfer_learning`, MBTL's "pseudo-greedy" from Jayawardana et al.'s
    T-RO paper): start in the middle, then split the widest gap between trained contexts (an end gap at a
    third of its width, an inner gap at its middle)."""
    x = np.asarray(positions, np.float64)
    lo, hi = float(x.min()), float(x.max())
    edges, sources = [lo, hi], []
    for k in range(steps):
        if k == 0:
            target = (lo + hi) / 2
        else:
            widths = np.diff(edges)
            g = int(widths.argmax())
            if g == 0:
                target = (2 * edges[g] + edges[g + 1]) / 3
            elif g == len(edges) - 2:
                target = (edges[g] + 2 * edges[g + 1]) / 3
            else:
                target = (edges[g] + edges[g + 1]) / 2
        pick = _nearest(x, target)
        sources.append(pick)
        edges = sorted([*edges, float(x[pick])])
    return Selection(sources, generalised_curve(matrix, sources))


def equidistant(positions: np.ndarray, matrix: np.ndarray, steps: int) -> Selection:
    """Evenly spaced sources for a budget of `steps`, trained from the top of the range down
    (`coarse_to_fine_temporal_transfer_learning`)."""
    x = np.asarray(positions, np.float64)
    lo, hi = float(x.min()), float(x.max())
    sources = [_nearest(x, hi - (hi - lo) / (2 * steps) - (hi - lo) * k / steps) for k in range(steps)]
    return Selection(sources, generalised_curve(matrix, sources))


def random_selection(matrix: np.ndarray, steps: int, draws: int, seed: int) -> Selection:
    """`draws` random orders without replacement: the mean curve (std in `extra`), collect_result.py's
    100 draws of `np.random.choice(..., replace=False)`."""
    rng = np.random.default_rng(seed)
    curves = np.array(
        [generalised_curve(matrix, list(rng.choice(len(matrix), steps, replace=False))) for _ in range(draws)]
    )
    std = [float(v) for v in curves.std(axis=0)]
    return Selection([], [float(v) for v in curves.mean(axis=0)], {"std": std})
