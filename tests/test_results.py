"""Results pages: claim verdicts against hand-computed cases, the index covers every paper, and committed
pages re-render from their JSON with the same verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from common.evaluation.runs import write_run_dir
from common.report.claims import (
    aggregate_diff_ci,
    check_page,
    gather,
    load_page,
    mean_diff_ci,
    rate_ci,
    render,
    spearman_ci,
    verdict,
)
from common.report.index import papers, uncovered

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


# --------------------------------------------------------------------------------------- verdict math
def test_mean_diff_ci_brackets_the_difference_and_is_reproducible():
    point, lo, hi = mean_diff_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], reps=5000, seed=0)
    assert point == 2.0 and 1.0 <= lo < 2.0 < hi <= 3.0
    assert mean_diff_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], reps=5000, seed=0) == (point, lo, hi)
    # two constant samples: a zero-width interval at the difference
    assert mean_diff_ci([5.0, 5.0], [2.0], reps=100) == (3.0, 3.0, 3.0)


@pytest.mark.parametrize(
    ("a", "b", "margin", "expected"),
    [
        ([10.0, 11.0, 12.0], [0.0, 1.0, 2.0], 0.0, "holds"),  # CI of the difference around 10
        ([0.0, 1.0, 2.0], [10.0, 11.0, 12.0], 0.0, "fails"),
        ([0.0, 10.0, 20.0], [5.0, 15.0, 0.0], 0.0, "inconclusive"),
        ([10.0, 11.0, 12.0], [0.0, 1.0, 2.0], 15.0, "fails"),  # ≫ by 15: the gap of 10 is below it
        ([1000.0], [1000.0, 1000.0], 0.0, "fails"),  # identical scores: a zero-width CI at 0 shows no gain
    ],
)
def test_greater(a, b, margin, expected):
    assert verdict("greater", {"a": a, "b": b}, {"margin": margin})["verdict"] == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([50.0, 51.0, 52.0], [50.0, 51.0, 52.0], "holds"),  # difference 0, CI well inside ±10
        ([80.0, 81.0, 82.0], [50.0, 51.0, 52.0], "fails"),  # difference 30, CI wholly above 10
        ([40.0, 60.0, 80.0], [50.0, 51.0, 52.0], "inconclusive"),  # CI straddles the margin
    ],
)
def test_equivalent(a, b, expected):
    assert verdict("equivalent", {"a": a, "b": b}, {"margin": 10})["verdict"] == expected


def test_rate_at_most_uses_the_exact_interval():
    # 30/1000 = 0.03: Clopper-Pearson upper bound 0.0425 <= 0.05
    point, lo, hi = rate_ci(30, 1000)
    assert point == 0.03 and hi == pytest.approx(0.04254, abs=1e-4) and lo == pytest.approx(0.02032, abs=1e-4)
    assert verdict("rate_at_most", {"k": 30, "n": 1000}, {"alpha": 0.05})["verdict"] == "holds"
    assert verdict("rate_at_most", {"k": 90, "n": 1000}, {"alpha": 0.05})["verdict"] == "fails"
    assert verdict("rate_at_most", {"k": 3, "n": 50}, {"alpha": 0.05})["verdict"] == "inconclusive"


def test_mean_below_and_bad_kinds():
    assert verdict("mean_below", {"a": [1, 2, 1, 2]}, {"threshold": 5})["verdict"] == "holds"
    assert verdict("mean_below", {"a": [5, 5, 5]}, {"threshold": 5})["verdict"] == "fails"
    with pytest.raises(ConfigError, match="unknown claim kind"):
        verdict("bigger", {"a": [1]}, {})
    with pytest.raises(ConfigError, match="positive margin"):
        verdict("equivalent", {"a": [1], "b": [1]}, {})


# ------------------------------------------------------------------------------------------- evidence
def test_arms_select_runs_by_paper_tag_and_dataset(tmp_path):
    """Arms pick complete runs by paper, env, tag and dataset; failed runs and other tags never enter."""
    import yaml

    def run(name: str, seed: int, final: float, state: str = "finished", **keys: str) -> None:
        path = write_run_dir(tmp_path / name, "stream_ac", "hopper", seed, [0, 10], [0.0, final], state=state)
        cfg = yaml.safe_load((path / "config.yaml").read_text())
        cfg.update(keys)
        (path / "config.yaml").write_text(yaml.safe_dump(cfg))

    for s in (1, 2, 3):
        run(f"ac{s}", s, 100.0 * s)
        run(f"sgd{s}", s, 1.0 * s, tag="barrier_sgd")
    run("ac_failed", 4, 9999.0, state="failed")
    from common.evaluation.runs import load_runs

    spec = {
        "arms": {"ac": {"paper": "stream_ac"}, "sgd": {"paper": "stream_ac", "tag": "barrier_sgd"}},
        "claims": [{"id": "x", "text": "ac > sgd", "kind": "greater", "a": "ac", "b": "sgd"}],
    }
    (claim,) = gather(tmp_path, spec, load_runs([tmp_path]))
    assert claim["evidence"] == {"a": [100.0, 200.0, 300.0], "b": [1.0, 2.0, 3.0]}
    assert [r["seed"] for r in claim["sources"]["a"]["runs"]] == [1, 2, 3]
    assert claim["verdict"] == "holds"
    # a run that stopped with an error counts at its last evaluation when the arm asks for it
    spec["arms"]["ac"]["failed"] = "last_eval"
    (claim,) = gather(tmp_path, spec, load_runs([tmp_path]))
    assert claim["evidence"]["a"] == [100.0, 200.0, 300.0, 9999.0]
    assert claim["sources"]["a"]["runs"][-1]["state"] == "failed"
    spec["arms"]["none"] = {"paper": "stream_ac", "tag": "nothing"}
    spec["claims"][0]["b"] = "none"
    with pytest.raises(ConfigError, match="selects no finished run"):
        gather(tmp_path, spec, load_runs([tmp_path]))


def test_diverged_metric_counts_diverged_runs_as_one_and_finished_as_zero(tmp_path):
    """`metric: diverged` turns each finished or diverged run into 0/1 (failed and running runs stay out),
    so `greater` compares two arms' divergence rates."""
    from common.evaluation.runs import load_runs

    for s, state in enumerate(("diverged", "diverged", "finished"), start=1):
        write_run_dir(tmp_path / f"x{s}", "xql", "hopper", s, [0, 10], [0.0, 1.0], state=state)
        write_run_dir(tmp_path / f"f{s}", "dual_rl", "hopper", s, [0, 10], [0.0, 1.0])
    write_run_dir(tmp_path / "x4", "xql", "hopper", 4, [0, 10], [0.0, 1.0], state="failed")
    spec = {
        "arms": {
            "xql": {"paper": "xql", "metric": "diverged"},
            "fdvl": {"paper": "dual_rl", "metric": "diverged"},
        },
        "claims": [{"id": "d", "text": "xql diverges more", "kind": "greater", "a": "xql", "b": "fdvl"}],
    }
    (claim,) = gather(tmp_path, spec, load_runs([tmp_path]))
    assert claim["evidence"] == {"a": [1.0, 1.0, 0.0], "b": [0.0, 0.0, 0.0]}
    assert [r["state"] for r in claim["sources"]["a"]["runs"]] == ["diverged", "diverged", "finished"]
    assert claim["point"] == pytest.approx(2 / 3)


def test_rate_greater_uses_newcombes_interval_by_hand():
    """0/3 vs 0/3 cannot be decided (the bootstrap would collapse to [0, 0] and say fails); 3/3 vs 0/3
    holds. The bounds are Newcombe's method 10 (statsmodels' `newcomb`: [-0.5615, 0.5615], [0.2059, 1])."""
    v = verdict("rate_greater", {"a": [0.0, 0.0, 0.0], "b": [0.0, 0.0, 0.0]}, {})
    assert v["verdict"] == "inconclusive" and v["point"] == 0.0
    assert v["lower"] == pytest.approx(-0.561497, abs=1e-5)
    assert v["upper"] == pytest.approx(0.561497, abs=1e-5)
    v = verdict("rate_greater", {"a": [1.0, 1.0, 1.0], "b": [0.0, 0.0, 0.0]}, {})
    assert v["verdict"] == "holds" and v["lower"] == pytest.approx(0.205923, abs=1e-5) and v["upper"] == 1.0
    v = verdict("rate_greater", {"a": [0.0] * 20, "b": [1.0] * 20}, {})
    assert v["verdict"] == "fails"
    with pytest.raises(ConfigError, match="0/1 values"):
        verdict("rate_greater", {"a": [0.5], "b": [0.0]}, {})


def test_rate_greater_agrees_with_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.proportion")
    from common.report.claims import rate_diff_ci

    for ka, kb, n in [(0, 0, 3), (2, 0, 3), (1, 4, 5), (7, 3, 10)]:
        a, b = [1.0] * ka + [0.0] * (n - ka), [1.0] * kb + [0.0] * (n - kb)
        lo, hi = sm.confint_proportions_2indep(ka, n, kb, n, method="newcomb")
        _, got_lo, got_hi = rate_diff_ci(a, b)
        assert got_lo == pytest.approx(lo, abs=1e-9) and got_hi == pytest.approx(hi, abs=1e-9)


def test_file_evidence_reads_dotted_keys_and_mappings(tmp_path):
    (tmp_path / "e.json").write_text(json.dumps({"s": {"a": [1, 2], "per_seed": {"100": 5.0, "101": 7.0}}}))
    spec = {
        "claims": [
            {
                "id": "f",
                "kind": "greater",
                "a": {"file": "e.json", "key": "s.per_seed"},
                "b": {"file": "e.json", "key": "s.a"},
            }
        ]
    }
    (claim,) = gather(tmp_path, spec, [])
    assert claim["evidence"] == {"a": [5.0, 7.0], "b": [1.0, 2.0]}
    spec["claims"][0]["a"]["key"] = "s.missing"
    with pytest.raises(ConfigError, match="no key 's.missing'"):
        gather(tmp_path, spec, [])


def test_aggregate_iqm_difference_normalises_per_task_by_hand():
    """a normalised: t1 → 1, 1; t2 → (1 − 0) / (2 − 0) = 0.5, 0.5. Pooled [0.5, 0.5, 1, 1]: the IQM drops
    int(4/4) = 1 from each end → mean(0.5, 1) = 0.75. b is 0 everywhere. No spread: a zero-width CI."""
    a, b = {"t1": [1.0, 1.0], "t2": [1.0, 1.0]}, {"t1": [0.0, 0.0], "t2": [0.0, 0.0]}
    bounds = {"t1": [0.0, 1.0], "t2": [0.0, 2.0]}
    assert aggregate_diff_ci(a, b, bounds) == pytest.approx((0.75, 0.75, 0.75))
    assert aggregate_diff_ci(a, b, bounds, metric="mean")[0] == pytest.approx(0.75)
    ev = {"a": a, "b": b, "bounds": bounds}
    assert verdict("aggregate_greater", ev, {})["verdict"] == "holds"
    assert verdict("aggregate_greater", {**ev, "b": a}, {})["verdict"] == "fails"  # equal arms: no gain
    noisy = {"t1": [0.0, 2.0, 1.0], "t2": [0.0, 2.0, 1.0]}
    assert verdict("aggregate_greater", {**ev, "a": noisy}, {"margin": 0.5})["verdict"] == "inconclusive"
    with pytest.raises(ConfigError, match="same tasks"):
        aggregate_diff_ci(a, {"t1": [0.0]}, bounds)


def test_aggregate_claim_reads_tasks_from_runs_and_random_scores_from_a_file(tmp_path):
    import yaml

    from common.evaluation.runs import load_runs

    for env, scale in (("g1", 1.0), ("g2", 10.0)):
        for s in (1, 2, 3):
            for tag, final in (("hl", 2.0 * scale), ("mse", 1.0 * scale)):
                path = write_run_dir(tmp_path / f"{env}{tag}{s}", "hl_gauss", env, s, [0, 10], [0.0, final])
                cfg = yaml.safe_load((path / "config.yaml").read_text())
                (path / "config.yaml").write_text(yaml.safe_dump({**cfg, "tag": tag}))
    (tmp_path / "random.json").write_text(json.dumps({"random": {"g1": 0.0, "g2": 0.0}}))
    spec = {
        "arms": {"hl": {"paper": "hl_gauss", "tag": "hl"}, "mse": {"paper": "hl_gauss", "tag": "mse"}},
        "claims": [
            {
                "id": "agg",
                "kind": "aggregate_greater",
                "a": "hl",
                "b": "mse",
                "normalize": {"file": "random.json", "key": "random"},
            }
        ],
    }
    (claim,) = gather(tmp_path, spec, load_runs([tmp_path]))
    assert claim["evidence"]["bounds"] == {"g1": [0.0, 2.0], "g2": [0.0, 20.0]}  # best arm's mean → 1
    assert claim["point"] == pytest.approx(0.5) and claim["verdict"] == "holds"
    assert "| g2 | 20.0 (n=3) | 10.0 (n=3) | 0 | 20.0 |" in render({"title": "t"}, {"claims": [claim]})
    (tmp_path / "random.json").write_text(json.dumps({"random": {"g1": 0.0, "g2": 25.0}}))
    (claim,) = gather(tmp_path, spec, load_runs([tmp_path]))  # g2: no arm above random, left out
    assert set(claim["evidence"]["a"]) == {"g1"} and set(claim["evidence"]["excluded"]) == {"g2"}
    assert claim["point"] == pytest.approx(0.5)  # g1 alone: hl 1, mse 0.5
    (tmp_path / "random.json").write_text(json.dumps({"random": {"g1": 0.0}}))
    with pytest.raises(ConfigError, match="no random score for task 'g2'"):
        gather(tmp_path, spec, load_runs([tmp_path]))


def test_spearman_ci_by_hand_and_undefined_resamples():
    """x ranks 1 2 3 4, y ranks 1 3 2 4: ρ = 1 − 6 Σd² / (n (n² − 1)) = 1 − 6 · 2 / 60 = 0.8."""
    rho, lo, hi, dropped = spearman_ci([1, 2, 3, 4], [10, 30, 20, 40])
    assert rho == pytest.approx(0.8) and lo <= 0.8 <= hi and hi <= 1.0
    # a resample drawing one task four times has constant columns: undefined, dropped and counted
    assert 0 < dropped < 20_000
    assert spearman_ci([1, 2, 3, 4], [10, 30, 20, 40]) == (rho, lo, hi, dropped)  # seeded
    assert spearman_ci([1, 2, 3], [5, 5, 5])[:3] == (None, None, None)  # a constant column: no ρ
    with pytest.raises(ConfigError, match="3 or more paired tasks"):
        spearman_ci([1, 2], [1, 2])


def test_rank_correlation_claim_ranks_inf_last_leaves_out_nulls_and_decides(tmp_path):
    rows = {f"t{i}": {"x": float(i), "y": float(10 * i)} for i in range(1, 9)}
    rows["t9"] = {"x": "inf", "y": "inf"}  # never solved: ranks last in both
    rows["t0"] = {"x": 3.0, "y": None}  # no y: left out
    (tmp_path / "table.json").write_text(json.dumps({"envs": rows}))
    claim = {
        "id": "r",
        "kind": "rank_correlation",
        "table": {"file": "table.json", "key": "envs"},
        "x": "x",
        "y": "y",
    }
    (out,) = gather(tmp_path, {"claims": [claim]}, [])
    ev = out["evidence"]
    assert ev["tasks"] == [f"t{i}" for i in range(1, 10)] and ev["left_out"] == {"t0": "no y value"}
    assert ev["x"] == ev["y"] == [float(i) for i in range(1, 10)]
    assert (
        out["point"] == pytest.approx(1.0) and out["verdict"] == "holds"
    )  # every resample ρ = 1 (or undefined)
    reversed_y = {**ev, "y": ev["x"][::-1]}
    assert verdict("rank_correlation", reversed_y, {})["verdict"] == "fails"  # ρ = −1 ≤ 0
    assert verdict("rank_correlation", ev, {"margin": 1.0})["verdict"] == "fails"  # ρ = 1 is not above 1
    noisy = {**ev, "y": [2.0, 1.0, 4.0, 3.0, 9.0, 5.0, 7.0, 6.0, 8.0]}
    assert verdict("rank_correlation", noisy, {"margin": 0.9})["verdict"] == "inconclusive"
    page = render({"title": "t"}, {"claims": [out]})
    assert "x ranks (9 tasks)" in page and "left out t0 (no y value)" in page
    json.dumps(out, allow_nan=False)  # claims.json stays strict JSON
    claim["x"] = "missing"  # a column no task has: every task left out, too few to correlate
    with pytest.raises(ConfigError, match="3 or more paired tasks"):
        gather(tmp_path, {"claims": [claim]}, [])


# ---------------------------------------------------------------------------------- committed pages
def test_every_paper_has_a_results_page_or_a_reason():
    assert papers(), "no conf/paper/*.yaml found"
    assert uncovered() == [], "add a results page or an entry in results/not_reproduced.yaml"


def test_index_fails_for_a_paper_without_page_or_reason(tmp_path):
    (tmp_path / "conf" / "paper").mkdir(parents=True)
    (tmp_path / "conf" / "paper" / "newpaper.yaml").write_text("name: newpaper\n")
    (tmp_path / "results").mkdir()
    assert uncovered(tmp_path) == ["newpaper"]
    (tmp_path / "results" / "not_reproduced.yaml").write_text("newpaper: needs a GPU\n")
    assert uncovered(tmp_path) == []


def committed_pages() -> list[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/claims.json"))


@pytest.mark.parametrize("page", committed_pages(), ids=lambda p: p.name)
def test_committed_page_rerenders_from_its_json_with_the_same_verdicts(page):
    """Recomputing every verdict from claims.json agrees with the stored one, and rendering page.yaml +
    claims.json reproduces the committed README.md byte for byte."""
    assert check_page(page) == []
    data = json.loads((page / "claims.json").read_text())
    assert render(load_page(page), data) == (page / "README.md").read_text()
    for fig in load_page(page).get("figures") or []:  # the paper's own plots the page shows are committed
        assert (page / fig["file"]).is_file(), fig
    for claim in data["claims"]:
        assert claim["verdict"] in ("holds", "fails", "inconclusive")
        assert np.isfinite([claim["point"], claim["lower"], claim["upper"]]).all()


def test_committed_reports_name_no_machine_folder():
    """`relative=True` strips absolute prefixes before the project's folders; committed pages hold none."""
    from common.report import portable

    got = portable({"cmd": ["/home/u/x/.venv/bin/python run.py hydra.sweep.dir=/home/u/x/runs/a"], "n": 3})
    assert got == {"cmd": [".venv/bin/python run.py hydra.sweep.dir=runs/a"], "n": 3}
    for path in RESULTS.rglob("*"):
        if path.suffix in (".json", ".md"):
            text = path.read_text()
            assert "/home/" not in text and "/work/" not in text and "/root/" not in text, path


def test_random_policy_scores_name_each_task_and_match_cartpoles_known_range(tmp_path):
    """A uniform random policy balances CartPole-v1 for about 22 steps (a well-known figure); the JSON
    maps the env's name to the mean return and records how it was measured."""
    from common.evaluation.random_policy import main

    out = tmp_path / "random.json"
    assert main(["--paper", "stream_q", "--env", "cartpole", "--episodes", "50", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["random"]) == {"cartpole"} and record["episodes"] == 50
    assert 15.0 < record["random"]["cartpole"] < 30.0
    assert main(["--paper", "stream_q", "--env", "cartpole", "--episodes", "0", "--out", str(out)]) == 2
