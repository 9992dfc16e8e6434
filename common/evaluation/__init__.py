"""Evaluation statistics: aggregate metrics, stratified-bootstrap intervals, profiles and P(X > Y)."""

from common.evaluation.stats import (
    METRICS,
    Interval,
    Metric,
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
    stratified_indices,
)

__all__ = [
    "METRICS",
    "Interval",
    "Metric",
    "bootstrap_ci",
    "bootstrap_intervals",
    "iqm",
    "mean",
    "median",
    "normalize",
    "optimality_gap",
    "performance_profile",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "sample_efficiency_curve",
    "stratified_indices",
]
