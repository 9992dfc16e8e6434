"""Evaluation statistics against hand-computed values, and against rliable 1.2.0 when it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from common.evaluation import (
    bootstrap_ci,
    bootstrap_intervals,
    iqm,
    mean,
    median,
    normalize,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_ci,
    sample_efficiency_curve,
)

# 4 runs x 3 tasks. Pooled and sorted: 0 1 1 1 | 1 1 2 2 3 4 | 10 100 (IQM keeps the middle 6).
HAND = np.array([[0, 10, 1], [1, 2, 1], [3, 100, 1], [2, 4, 1]], dtype=float)


def synthetic(runs: int = 10, tasks: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 0.5, size=(runs, tasks)) * rng.uniform(0.5, 1.5, size=tasks)


# ------------------------------------------------------------------------------------ point metrics
def test_aggregate_metrics_hand_computed():
    assert iqm(HAND) == pytest.approx(10 / 6)  # (1 + 1 + 1 + 2 + 2 + 3) / 6
    assert mean(HAND) == pytest.approx(126 / 12)
    assert median(HAND) == pytest.approx(1.5)  # task means 1.5, 29, 1
    assert optimality_gap(HAND) == pytest.approx(1 / 12)  # only the 0 falls short of gamma = 1
    clipped = [0, 2, 1, 1, 2, 1, 2, 2, 1, 2, 2, 1]  # min(score, 2), row by row
    assert optimality_gap(HAND, gamma=2.0) == pytest.approx(2 - sum(clipped) / 12)


def test_run_median_is_over_runs_not_tasks():
    from common.evaluation.stats import run_median

    assert run_median(HAND) == pytest.approx((1.5 + 7 + 1) / 3)  # per-task medians over runs, averaged
    skewed = np.array([[0.0], [0.0], [0.0], [10.0], [990.0]])  # one task: the median run, not the mean
    assert run_median(skewed) == 0.0 and median(skewed) == pytest.approx(200.0)
    iv = bootstrap_ci(skewed, "run_median", reps=2000, seed=0)
    assert float(iv.point) == 0.0 and float(iv.lower) == 0.0


def test_iqm_cuts_floor_quarter_like_trim_mean():
    # 5 x 2 = 10 scores: int(0.25 * 10) = 2 cut from each end, the middle 6 averaged.
    s = np.arange(10, dtype=float).reshape(5, 2)
    assert iqm(s) == pytest.approx(np.mean(np.arange(2, 8)))


def test_normalize_per_task():
    s = np.array([[10.0, 0.0], [20.0, 5.0]])
    out = normalize(s, random=[10.0, 0.0], reference=[20.0, 10.0])
    np.testing.assert_allclose(out, [[0.0, 0.0], [1.0, 0.5]])
    curves = np.stack([s, 2 * s], axis=-1)  # (runs, tasks, steps)
    np.testing.assert_allclose(normalize(curves, [10.0, 0.0], [20.0, 10.0])[..., 0], out)
    with pytest.raises(ValueError, match="one value per task"):
        normalize(s, random=[0.0, 0.0, 0.0], reference=1.0)
    with pytest.raises(ValueError, match="divide by zero"):
        normalize(s, random=[1.0, 0.0], reference=[1.0, 1.0])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(runs, tasks\)"):
        iqm(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        mean(np.array([[1.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci(np.ones((1, 3)))
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(np.ones((3, 3)), "iqr")
    with pytest.raises(ValueError, match="reps"):
        bootstrap_ci(np.ones((3, 3)), reps=0)
    with pytest.raises(ValueError, match="tasks"):
        probability_of_improvement(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\(runs, tasks, steps\)"):
        sample_efficiency_curve(np.ones((3, 3)))


# ---------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_is_deterministic_per_seed_and_differs_across_seeds():
    s = synthetic()
    a = bootstrap_ci(s, "iqm", reps=2000, seed=7)
    b = bootstrap_ci(s, "iqm", reps=2000, seed=np.random.default_rng(7))
    c = bootstrap_ci(s, "iqm", reps=2000, seed=8)
    assert (a.lower, a.upper) == (b.lower, b.upper)
    assert (a.lower, a.upper) != (c.lower, c.upper)


def test_interval_contains_point_estimate_for_every_metric():
    s = synthetic()
    for name, iv in bootstrap_intervals(s, reps=2000, seed=0).items():
        assert iv.lower <= iv.point <= iv.upper, name
        assert iv.upper > iv.lower, name
    assert float(bootstrap_ci(s, "mean", reps=2000).point) == pytest.approx(mean(s))


def test_stratification_keeps_tasks_separate():
    # Task 0 is always 0 and task 1 always 1. Resampling runs within each task keeps four 0s and four 1s in
    # every replicate, so every aggregate is exactly 0.5; pooling runs across tasks would mix them.
    s = np.array([[0.0, 1.0]] * 4)
    for name, iv in bootstrap_intervals(s, ("iqm", "mean", "median"), reps=2000, seed=0).items():
        assert (float(iv.lower), float(iv.upper)) == (0.5, 0.5), name
    # A task's replicate only ever holds that task's scores.
    s = np.column_stack([np.arange(6.0), 10 + np.arange(6.0)])
    iv = bootstrap_ci(s, lambda r: r[..., 1].min(axis=-1) - r[..., 0].max(axis=-1), reps=2000)
    assert float(iv.lower) >= 5.0


def test_bootstrap_interval_narrows_with_more_runs():
    few = bootstrap_ci(synthetic(runs=5, seed=1), reps=4000)
    many = bootstrap_ci(synthetic(runs=80, seed=1), reps=4000)
    assert many.upper - many.lower < few.upper - few.lower


# ------------------------------------------------------------------------------ profile, P(X > Y)
def test_performance_profile_hand_computed():
    s = np.array([[0.1, 0.5], [0.9, 1.5]])
    prof = performance_profile(s, [0.0, 0.5, 1.0, 2.0], reps=500)
    np.testing.assert_allclose(prof.point, [1.0, 0.5, 0.25, 0.0])  # strict: a score equal to tau is not above
    assert prof.lower.shape == prof.upper.shape == (4,)
    assert np.all(prof.lower <= prof.point) and np.all(prof.point <= prof.upper)


def test_probability_of_improvement_obvious_cases():
    low, high = np.zeros((4, 3)), np.ones((5, 3))
    assert probability_of_improvement(high, low) == 1.0
    assert probability_of_improvement(low, high) == 0.0
    s = synthetic()
    assert probability_of_improvement(s, s) == pytest.approx(0.5)
    assert probability_of_improvement(np.full((3, 2), 4.0), np.full((2, 2), 4.0)) == 0.5  # all ties


def test_probability_of_improvement_with_ties_hand_computed():
    # Task 0: x = 1, 2, 3 vs y = 2, 0 -> wins (0 + 1) + (1/2 + 1) + (1 + 1) = 4.5 of 6 pairs = 0.75.
    # Task 1: every x beats every y -> 1.  Average 0.875.
    x = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0]])
    y = np.array([[2.0, 0.0], [0.0, 1.0]])
    assert probability_of_improvement(x, y) == pytest.approx(0.875)
    assert probability_of_improvement(y, x) == pytest.approx(0.125)
    iv = probability_of_improvement_ci(x, y, reps=2000)
    assert float(iv.point) == pytest.approx(0.875)
    assert iv.lower <= iv.point <= iv.upper
    assert float(iv.upper) <= 1.0


def test_probability_of_improvement_ci_deterministic_and_ordered():
    x, y = synthetic(seed=1) + 0.3, synthetic(runs=7, seed=2)
    a = probability_of_improvement_ci(x, y, reps=2000, seed=3)
    b = probability_of_improvement_ci(x, y, reps=2000, seed=3)
    assert (a.lower, a.upper) == (b.lower, b.upper)
    assert a.point > 0.5 and a.lower <= a.point <= a.upper


# ---------------------------------------------------------------------------------------- curves
def test_sample_efficiency_curve_matches_per_step_metric():
    rng = np.random.default_rng(0)
    curves = np.cumsum(rng.uniform(0, 1, size=(6, 4, 5)), axis=-1)  # (runs, tasks, steps)
    curve = sample_efficiency_curve(curves, "iqm", reps=3000, seed=0)
    assert curve.point.shape == curve.lower.shape == (5,)
    np.testing.assert_allclose(curve.point, [iqm(curves[..., t]) for t in range(5)])
    assert np.all(curve.lower <= curve.point) and np.all(curve.point <= curve.upper)
    # Each step sees the same replicates as a final-score bootstrap with the same seed.
    last = bootstrap_ci(curves[..., -1], "iqm", reps=3000, seed=0)
    np.testing.assert_allclose([curve.lower[-1], curve.upper[-1]], [last.lower, last.upper], rtol=1e-12)


# ------------------------------------------------------------------------------ agreement with rliable
# Point estimates must agree to 1e-3 (they agree to rounding). Interval end points are Monte-Carlo estimates
# of a quantile q_p of the bootstrap distribution; with B replicates their standard error is
# sqrt(p (1 - p) / B) * dq/dp. Two independent estimates (ours with B1, rliable with B2) may differ by
# sqrt(p (1 - p) (1/B1 + 1/B2)) * dq/dp per standard error; we allow 4 of them, with dq/dp read off our own
# bootstrap quantiles at p +- 0.005. At B1 = 200,000, B2 = 20,000 on this 10 x 5 matrix that is
# 0.003-0.009 (observed differences <= 0.0033). rliable loops over replicates in Python (~3 s per 10,000
# for four metrics), which is what bounds B2 here; ours takes ~1 s for 200,000.
REPS_OURS, REPS_RLIABLE, N_SE = 200_000, 20_000, 4.0


def mc_tolerance(fn, p: float, reps_rliable: int) -> np.ndarray:
    """4 standard errors of (our quantile - rliable's quantile), fn(confidence) -> Interval."""
    h = 0.005
    wide, narrow = fn(1 - 2 * (p - h)), fn(1 - 2 * (p + h))
    dq_dp = np.maximum(np.abs(narrow.lower - wide.lower), np.abs(wide.upper - narrow.upper)) / (2 * h)
    return N_SE * np.sqrt(p * (1 - p) * (1 / REPS_OURS + 1 / reps_rliable)) * dq_dp + 1e-12


def test_agrees_with_rliable_aggregates():
    rliable = pytest.importorskip("rliable")
    from rliable import library as rly
    from rliable import metrics as rm

    assert rliable is not None
    s = synthetic()
    ours = bootstrap_intervals(s, reps=REPS_OURS, seed=0)
    assert iqm(s) == pytest.approx(rm.aggregate_iqm(s), abs=1e-3)
    assert mean(s) == pytest.approx(rm.aggregate_mean(s), abs=1e-3)
    assert median(s) == pytest.approx(rm.aggregate_median(s), abs=1e-3)
    assert optimality_gap(s) == pytest.approx(rm.aggregate_optimality_gap(s), abs=1e-3)

    names = ["iqm", "mean", "median", "optimality_gap"]
    fns = [rm.aggregate_iqm, rm.aggregate_mean, rm.aggregate_median, rm.aggregate_optimality_gap]
    np.random.seed(0)  # rliable draws from the global NumPy state, whatever random_state says
    points, cis = rly.get_interval_estimates(
        {"a": s}, lambda x: np.array([f(x) for f in fns]), reps=REPS_RLIABLE
    )
    for k, name in enumerate(names):
        assert float(ours[name].point) == pytest.approx(points["a"][k], abs=1e-3)
        tol = mc_tolerance(
            lambda c, name=name: bootstrap_intervals(s, (name,), reps=REPS_OURS, confidence=c, seed=0)[name],
            0.025,
            REPS_RLIABLE,
        )
        assert abs(ours[name].lower - cis["a"][0, k]) <= tol, (name, ours[name], cis["a"][:, k], tol)
        assert abs(ours[name].upper - cis["a"][1, k]) <= tol, (name, ours[name], cis["a"][:, k], tol)


def test_agrees_with_rliable_profile_and_probability_of_improvement():
    pytest.importorskip("rliable")
    from rliable import library as rly
    from rliable import metrics as rm

    x, y = synthetic(seed=1) + 0.2, synthetic(runs=7, seed=2)
    assert probability_of_improvement(x, y) == pytest.approx(rm.probability_of_improvement(x, y), abs=1e-3)

    reps_poi = 1_000  # rliable calls scipy's Mann-Whitney per task per replicate: ~4 s per 1,000 replicates
    np.random.seed(0)
    points, cis = rly.get_interval_estimates(
        {"x,y": (x, y)}, lambda a, b: np.array([rm.probability_of_improvement(a, b)]), reps=reps_poi
    )
    ours = probability_of_improvement_ci(x, y, reps=REPS_OURS, seed=0)
    assert float(ours.point) == pytest.approx(points["x,y"][0], abs=1e-3)
    tol = mc_tolerance(
        lambda c: probability_of_improvement_ci(x, y, reps=REPS_OURS, confidence=c), 0.025, reps_poi
    )
    assert abs(ours.lower - cis["x,y"][0, 0]) <= tol and abs(ours.upper - cis["x,y"][1, 0]) <= tol

    # A profile's replicates live on the lattice k / (runs * tasks), so an end point can move by one lattice
    # step under Monte-Carlo noise: that is the tolerance for the bands.
    taus = np.linspace(0.0, 3.0, 13)
    np.random.seed(0)
    profiles, bands = rly.create_performance_profile({"x": x}, taus, reps=5_000)
    prof = performance_profile(x, taus, reps=REPS_OURS, seed=0)
    np.testing.assert_allclose(prof.point, profiles["x"], atol=1e-3)
    step = 1 / x.size
    np.testing.assert_allclose(prof.lower, bands["x"][0], atol=step + 1e-9)
    np.testing.assert_allclose(prof.upper, bands["x"][1], atol=step + 1e-9)
