"""Aggregate metrics and stratified-bootstrap intervals for deep-RL evaluation (Agarwal et al., 2021).

Scores are arrays of shape (runs, tasks) for final scores, or (runs, tasks, steps) for learning curves,
normalised per task beforehand (`normalize`). Definitions follow rliable 1.2.0 (google-research/rliable):

* mean / median: mean / median over tasks of the per-task mean over runs;
* run median: per-task median over runs, averaged over tasks (one task: the median run; not in rliable);
* IQM: 25 % trimmed mean of all run-task scores pooled (`scipy.stats.trim_mean(s, 0.25, axis=None)`);
* optimality gap: ``gamma - mean(min(s, gamma))``, lower is better;
* P(X > Y): per task, Mann-Whitney U / (n_x n_y) with ties counted 1/2, averaged over tasks;
* performance profile: fraction of all run-task scores strictly above each threshold tau.

Intervals are percentile intervals of a stratified bootstrap: each replicate resamples runs with replacement
independently within each task (tasks are never mixed). All replicates are drawn at once from a
`numpy.random.Generator`, so the same seed gives the same interval, and evaluated as (reps, runs, tasks)
arrays, in chunks that bound memory. Unlike rliable, no global NumPy random state is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: A vectorised metric: maps an array (..., runs, tasks) to (...) or (..., k), reducing the last two axes.
Metric = Callable[[np.ndarray], np.ndarray]
Seed = int | np.random.Generator | None

# Resampled arrays are evaluated in chunks of at most this many scores (8 MB of float64).
_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval (0-d arrays for scalar metrics)."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reps: int
    confidence: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: floats or lists of floats."""
        return {
            "point": self.point.tolist(),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "reps": self.reps,
            "confidence": self.confidence,
        }


# ----------------------------------------------------------------------------------------- validation
def _as_scores(scores: np.ndarray, name: str = "scores", ndim: int = 2, min_runs: int = 1) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    layout = "(runs, tasks)" if ndim == 2 else "(runs, tasks, steps)"
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got an array of shape {arr.shape}")
    if arr.size == 0 or 0 in arr.shape:
        raise ValueError(f"{name} is empty (shape {arr.shape}); need at least one run and one task")
    if arr.shape[0] < min_runs:
        raise ValueError(
            f"{name} has {arr.shape[0]} run(s); the bootstrap resamples runs and needs at least {min_runs}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); drop or fill failed runs first")
    return arr


def _check_bootstrap_args(reps: int, confidence: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


# ------------------------------------------------------------------------------------- normalisation
def normalize(scores: np.ndarray, random: np.ndarray | float, reference: np.ndarray | float) -> np.ndarray:
    """Per-task normalisation ``(score - random) / (reference - random)``; 0 = random, 1 = reference.

    `random` and `reference` are scalars or arrays of length tasks, broadcast along the task axis (axis 1) of
    scores shaped (runs, tasks) or (runs, tasks, steps).
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"scores must be (runs, tasks) or (runs, tasks, steps), got shape {arr.shape}")
    per_task = (1, -1) + (1,) * (arr.ndim - 2)  # broadcast a (tasks,) vector along axis 1
    bounds = []
    for label, value in (("random", random), ("reference", reference)):
        ref = np.asarray(value, dtype=np.float64)
        if ref.ndim > 1 or (ref.ndim == 1 and ref.shape[0] != arr.shape[1]):
            raise ValueError(
                f"{label} must be a scalar or have one value per task ({arr.shape[1]}), got {ref.shape}"
            )
        bounds.append(ref.reshape(per_task) if ref.ndim == 1 else ref)
    lo, hi = bounds
    if np.any(hi == lo):
        raise ValueError("reference equals random for some task; the normalisation would divide by zero")
    return (arr - lo) / (hi - lo)


# ------------------------------------------------------------------------------- vectorised metrics
def _mean(s: np.ndarray) -> np.ndarray:
    return s.mean(axis=-2).mean(axis=-1)


def _median(s: np.ndarray) -> np.ndarray:
    return np.median(s.mean(axis=-2), axis=-1)


def _run_median(s: np.ndarray) -> np.ndarray:
    return np.median(s, axis=-2).mean(axis=-1)


def _iqm(s: np.ndarray) -> np.ndarray:
    flat = s.reshape(*s.shape[:-2], -1)
    n = flat.shape[-1]
    low = int(0.25 * n)  # as scipy.stats.trim_mean: cut int(0.25 n) scores from each end
    high = n - low
    part = np.partition(flat, (low, high - 1), axis=-1)
    return part[..., low:high].mean(axis=-1)


def _optimality_gap(s: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    return gamma - np.minimum(s, gamma).mean(axis=(-2, -1))


METRICS: dict[str, Metric] = {
    "iqm": _iqm,
    "mean": _mean,
    "median": _median,
    "optimality_gap": _optimality_gap,
    "run_median": _run_median,
}


def _metric(metric: str | Metric) -> Metric:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)} or pass a callable")
    return METRICS[metric]


def mean(scores: np.ndarray) -> float:
    """Mean over tasks of the per-task mean score."""
    return float(_mean(_as_scores(scores)))


def median(scores: np.ndarray) -> float:
    """Median over tasks of the per-task mean score."""
    return float(_median(_as_scores(scores)))


def run_median(scores: np.ndarray) -> float:
    """Per-task median over runs, averaged over tasks: for one task (runs, 1), the median run's score.

    Unlike `median` (the median over tasks of per-task means), this is a median over runs.
    """
    return float(_run_median(_as_scores(scores)))


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the 25 % trimmed mean of all run-task scores pooled."""
    return float(_iqm(_as_scores(scores)))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """Amount by which scores fall short of `gamma` (scores above are clipped to it); lower is better."""
    return float(_optimality_gap(_as_scores(scores), gamma))


def _pairwise_wins(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(tasks, n_x, n_y): 1 where x beats y on that task, 1/2 for ties, 0 otherwise."""
    xt, yt = x.T[:, :, None], y.T[:, None, :]
    return (xt > yt) + 0.5 * (xt == yt)


def _check_pair(x: np.ndarray, y: np.ndarray, min_runs: int) -> tuple[np.ndarray, np.ndarray]:
    x = _as_scores(x, "scores_x", min_runs=min_runs)
    y = _as_scores(y, "scores_y", min_runs=min_runs)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"scores_x has {x.shape[1]} tasks but scores_y has {y.shape[1]}")
    return x, y


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y): per-task probability that a run of X beats a run of Y (ties 1/2), averaged over tasks.

    Run counts may differ between X and Y; task counts must match.
    """
    x, y = _check_pair(scores_x, scores_y, min_runs=1)
    return float(_pairwise_wins(x, y).mean(axis=(1, 2)).mean())


# --------------------------------------------------------------------------------------- bootstrap
def stratified_indices(rng: np.random.Generator, runs: int, tasks: int, reps: int) -> np.ndarray:
    """Run indices (reps, runs, tasks): each replicate draws `runs` runs with replacement, per task."""
    return rng.integers(0, runs, size=(reps, runs, tasks))


def _resampled(data: np.ndarray, idx: np.ndarray, metric: Metric) -> np.ndarray:
    """`metric` per replicate: data (batch, runs, tasks), idx (reps, runs, tasks) -> (reps, batch, ...)."""
    batch, runs, tasks = data.shape
    flat = data.reshape(batch, runs * tasks)
    flat_idx = idx * tasks + np.arange(tasks)  # (reps, runs, tasks) positions in a flattened matrix
    chunk = max(1, _CHUNK_ELEMENTS // (batch * runs * tasks))
    out = []
    for start in range(0, idx.shape[0], chunk):
        sample = flat[:, flat_idx[start : start + chunk]]  # (batch, chunk, runs, tasks)
        out.append(metric(np.moveaxis(sample, 0, 1)))  # metric sees (chunk, batch, runs, tasks)
    return np.concatenate(out, axis=0)


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    lower, upper = np.percentile(stats, [tail, 100.0 - tail], axis=0)
    return lower, upper


def _interval(point: np.ndarray, stats: np.ndarray, reps: int, confidence: float) -> Interval:
    lower, upper = _percentiles(stats, confidence)
    return Interval(np.asarray(point), np.asarray(lower), np.asarray(upper), reps, confidence)


def bootstrap_intervals(
    scores: np.ndarray,
    metrics: Sequence[str] | dict[str, Metric] = ("iqm", "mean", "median", "optimality_gap"),
    *,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> dict[str, Interval]:
    """Point estimates and stratified-bootstrap percentile intervals of metrics on (runs, tasks) scores.

    All metrics are evaluated on the same replicates. A custom metric is a vectorised callable mapping
    (..., runs, tasks) to (...) or (..., k).
    """
    _check_bootstrap_args(reps, confidence)
    arr = _as_scores(scores, min_runs=2)
    named = dict(metrics) if isinstance(metrics, dict) else {name: _metric(name) for name in metrics}
    idx = stratified_indices(np.random.default_rng(seed), arr.shape[0], arr.shape[1], reps)
    result = {}
    for name, fn in named.items():
        stats = _resampled(arr[None], idx, fn)[:, 0]
        result[name] = _interval(fn(arr), stats, reps, confidence)
    return result


def bootstrap_ci(
    scores: np.ndarray,
    metric: str | Metric = "iqm",
    *,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> Interval:
    """Point estimate and stratified-bootstrap percentile interval of one metric on (runs, tasks) scores."""
    fn = _metric(metric)
    return bootstrap_intervals(scores, {"m": fn}, reps=reps, confidence=confidence, seed=seed)["m"]


def performance_profile(
    scores: np.ndarray,
    taus: np.ndarray | Sequence[float],
    *,
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> Interval:
    """Score distribution: fraction of all run-task scores strictly above each tau, with bootstrap bands.

    Returns arrays of shape (len(taus),).
    """
    grid = np.asarray(taus, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"taus must be a non-empty 1-D grid, got shape {grid.shape}")

    def profile(s: np.ndarray) -> np.ndarray:
        return (s[..., None] > grid).mean(axis=(-3, -2))

    return bootstrap_intervals(scores, {"p": profile}, reps=reps, confidence=confidence, seed=seed)["p"]


def probability_of_improvement_ci(
    scores_x: np.ndarray,
    scores_y: np.ndarray,
    *,
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> Interval:
    """P(X > Y) with a stratified bootstrap interval: X and Y runs are resampled independently, per task."""
    _check_bootstrap_args(reps, confidence)
    x, y = _check_pair(scores_x, scores_y, min_runs=2)
    rng = np.random.default_rng(seed)
    tasks = x.shape[1]
    wins = _pairwise_wins(x, y)  # (tasks, n_x, n_y)
    # A replicate's per-task P(X > Y) is cx^T W cy / (n_x n_y), with cx, cy how often each run was drawn.
    cx = _counts(stratified_indices(rng, x.shape[0], tasks, reps), x.shape[0])
    cy = _counts(stratified_indices(rng, y.shape[0], tasks, reps), y.shape[0])
    per_task = np.einsum("rti,tij,rtj->rt", cx, wins, cy, optimize=True) / (x.shape[0] * y.shape[0])
    point = np.asarray(wins.mean(axis=(1, 2)).mean())
    return _interval(point, per_task.mean(axis=1), reps, confidence)


def _counts(idx: np.ndarray, runs: int) -> np.ndarray:
    """(reps, runs, tasks) indices -> (reps, tasks, runs) draw counts."""
    reps, _, tasks = idx.shape
    cell = (np.arange(reps)[:, None, None] * tasks + np.arange(tasks)) * runs + idx
    counts = np.bincount(cell.ravel(), minlength=reps * tasks * runs)
    return counts.reshape(reps, tasks, runs).astype(np.float64)


def sample_efficiency_curve(
    scores: np.ndarray,
    metric: str | Metric = "iqm",
    *,
    reps: int = 50_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> Interval:
    """The metric with bootstrap intervals at each evaluation step of (runs, tasks, steps) scores.

    Returns arrays of shape (steps,). Each replicate resamples whole runs (the same runs at every step), so
    a run's curve stays intact; the per-step intervals have the same distribution as rliable's, which
    resamples each step independently.
    """
    _check_bootstrap_args(reps, confidence)
    arr = _as_scores(scores, ndim=3, min_runs=2)
    fn = _metric(metric)
    by_step = np.moveaxis(arr, 2, 0)  # (steps, runs, tasks)
    idx = stratified_indices(np.random.default_rng(seed), arr.shape[0], arr.shape[1], reps)
    return _interval(fn(by_step), _resampled(by_step, idx, fn), reps, confidence)
