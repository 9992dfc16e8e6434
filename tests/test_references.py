"""Reference-score tables: every entry loads, cites a source, and matches the official results it names."""

from __future__ import annotations

import numpy as np
import pytest

from common.evaluation.references import (
    HERE,
    PaperScore,
    bounds_for,
    env_bounds,
    paper_interval,
    paper_scores,
    reference_for,
)
from common.registry import ROOT, config_choices


def test_reported_scores_live_with_their_paper():
    # papers/<paper>/references.yaml, one per paper, the paper being a registered one; only the env bounds,
    # shared by every paper, stay in common/
    files = sorted((ROOT / "papers").glob("*/references.yaml"))
    owners = {f.parent.name for f in files}
    assert {"drqv2", "drm", "sac", "stream_ac"} <= owners
    assert owners <= set(config_choices("paper")), "a references.yaml outside a registered paper's folder"
    assert {paper for paper, _ in paper_scores()} == owners
    assert sorted(p.name for p in HERE.glob("*.yaml")) == ["envs.yaml"]
    assert reference_for("sac", "walker_walk", 10)[1].endswith("in papers/sac/references.yaml")


def test_every_entry_has_a_source_and_numbers_only_when_available():
    table = paper_scores()
    assert table, "no papers/*/references.yaml entries"
    for (paper, env), entries in table.items():
        for e in entries:
            assert e.source.strip(), (paper, env)
            if e.unavailable:
                assert e.mean is None and not e.runs
            else:
                assert e.frames and e.frames > 0 and e.mean is not None
                assert "@" in e.source or "(unverified)" in e.source or "Table" in e.source, e.source


def test_drqv2_numbers_match_the_official_curve_summaries():
    # Summaries of facebookresearch/drqv2@c0c650b curves/dmc_<task>.csv at these frames: mean and population
    # sd over the seeds, computed from the CSVs.
    expected = {
        ("cheetah_run", 1_000_000): (728.5, 41.0, 10),
        ("cheetah_run", 2_980_000): (890.1, 26.0, 10),
        ("quadruped_run", 2_980_000): (719.4, 104.0, 8),
        ("humanoid_run", 30_000_000): (224.8, 41.2, 10),
        ("reacher_hard", 2_980_000): (971.0, 4.4, 10),
        ("cartpole_swingup", 980_000): (864.7, 15.5, 10),
    }
    for (env, frames), (mean, pop_sd, seeds) in expected.items():
        ref, why = reference_for("drqv2", env, frames)
        assert ref is not None, why
        assert ref.mean == pytest.approx(mean, abs=0.06)
        assert np.std(ref.runs) == pytest.approx(pop_sd, abs=0.06)
        assert ref.seeds == seeds and ref.sd == pytest.approx(np.std(ref.runs, ddof=1))


def test_reference_lookup_explains_missing_numbers():
    ref, why = reference_for("drqv2", "cheetah_run", 400)
    assert ref is None and "budgets differ" in why and "1,000,000" in why
    ref, why = reference_for("drqv2", "cheetah_run", 1_010_000)  # within 2 % of 1M
    assert ref is not None and ref.frames == 1_000_000
    assert "no sac number" in reference_for("sac", "walker_walk", 10)[1]
    ref, why = reference_for("drm", "dog_run", 30_000_000)
    assert ref is None and why.startswith("not available") and "not digitised" in why


def test_env_bounds():
    b = bounds_for("cheetah_run")
    assert b is not None and b.normalize(500.0) == pytest.approx(0.5)
    assert bounds_for("hopper") is None  # no source-backed reference recorded: raw returns only
    assert all(v.high > v.low for v in env_bounds().values())


def test_paper_interval_from_per_seed_runs_or_sd_and_seeds():
    ref, _ = reference_for("drqv2", "cheetah_run", 1_000_000)
    assert ref is not None
    iv = paper_interval(ref, reps=2000)
    assert iv is not None and iv.seeds == 10 and iv.lower < ref.mean < iv.upper and "bootstrap" in iv.method
    reported = PaperScore("p", "e", 1000, 10.0, 2.0, 5, (), "Table 1")
    iv = paper_interval(reported)
    half = 2.7764451051977987 * 2.0 / np.sqrt(5)  # t_{0.975, 4} sd / sqrt(n)
    assert iv is not None and (iv.lower, iv.upper) == (pytest.approx(10 - half), pytest.approx(10 + half))
    assert paper_interval(PaperScore("p", "e", 1000, 10.0, None, None, (), "Table 1")) is None
    assert paper_interval(PaperScore("p", "e", 1000, 10.0, 2.0, None, (), "Table 1")) is None
