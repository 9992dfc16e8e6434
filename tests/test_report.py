"""Reports from run directories: known answers on synthetic runs, a golden results.json, bad input,
the HTML rendered in headless Chromium, and the W&B spec built offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from common.evaluation.runs import final_scores, frame_curves, load_run, load_runs, single_env, write_run_dir
from common.report import build_report

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "report_golden_results.json"
FAST = {"reps": 2_000, "curve_reps": 200, "seed": 0, "generated": "fixed"}


def make_runs(root: Path) -> Path:
    """A fixed set of run dirs: drqv2 and drm on cheetah_run at 1M frames (4 finished seeds each, plus a
    running drm seed and a failed drqv2 seed), one drm seed on a coarser eval grid, and sac on hopper."""
    rng = np.random.default_rng(1234)
    grid = np.arange(0, 1_000_001, 250_000)
    for paper, final, seeds in (("drqv2", 700.0, range(1, 5)), ("drm", 800.0, range(1, 5))):
        for seed in seeds:
            frames = grid if (paper, seed) != ("drm", 4) else np.arange(0, 1_000_001, 500_000)
            curve = final * frames / frames[-1] + rng.normal(0, 20, frames.size)
            write_run_dir(root / paper / f"s{seed}", paper, "cheetah_run", seed, frames, curve)
    write_run_dir(
        root / "drm" / "s5",
        "drm",
        "cheetah_run",
        5,
        grid[:3],
        [0.0, 300.0, 500.0],
        state="running",
        budget=1_000_000,
    )
    write_run_dir(
        root / "drqv2" / "s5",
        "drqv2",
        "cheetah_run",
        5,
        grid[:2],
        [0.0, 100.0],
        state="failed",
        budget=1_000_000,
    )
    for seed in (1, 2):
        write_run_dir(root / "sac" / f"s{seed}", "sac", "hopper", seed, [0, 1000], [10.0, 1000.0 + seed])
    return root


def _masked(results: dict) -> dict:
    out = json.loads(json.dumps(results))
    out["root"] = "<root>"
    out["provenance"]["report_tools"] = "<versions>"
    return out


def _approx_equal(a, b, path="") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _approx_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _approx_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = make_runs(tmp_path_factory.mktemp("runs"))
    out = tmp_path_factory.mktemp("report") / "r"
    results = build_report([root], out, **FAST)
    return root, out, results


# ------------------------------------------------------------------------------------ known answers
def test_tables_and_inventory_have_known_answers(report):
    root, out, res = report
    cheetah = {r["paper"]: r for r in res["envs"]["cheetah_run"]["table"]}
    finals = [
        json.loads((root / "drqv2" / f"s{s}" / "status.json").read_text())["score"] for s in range(1, 5)
    ]
    assert cheetah["drqv2"]["n"] == 4 and cheetah["drqv2"]["mean"]["point"] == pytest.approx(np.mean(finals))
    lo, hi = cheetah["drqv2"]["mean"]["lower"], cheetah["drqv2"]["mean"]["upper"]
    assert min(finals) <= lo <= np.mean(finals) <= hi <= max(finals)
    # drqv2's paper number at 1M frames (728.5, 10 seeds) against ours around 700: our CI against the
    # paper's (a bootstrap CI of its mean over its 10 per-seed scores), with the source cited
    ref, piv = cheetah["drqv2"]["paper_ref"], cheetah["drqv2"]["paper_interval"]
    assert ref["mean"] == pytest.approx(728.5, abs=0.05) and "drqv2@c0c650b" in ref["source"]
    assert piv["seeds"] == 10 and piv["lower"] < ref["mean"] < piv["upper"]
    expected = (
        "above paper"
        if lo > piv["upper"]
        else ("below paper" if hi < piv["lower"] else "inconclusive (intervals overlap)")
    )
    assert cheetah["drqv2"]["verdict"] == expected
    assert (
        cheetah["drm"]["paper_ref"] is None
        and "no drm number for cheetah_run" in cheetah["drm"]["paper_note"]
    )
    # partial runs are listed, not dropped
    assert cheetah["drm"]["left_out"] == [{"seed": 5, "state": "running", "last_frame": 500_000}]
    assert cheetah["drqv2"]["left_out"][0]["state"] == "failed"
    inv = {(r["paper"], r["env"]): r for r in res["inventory"]}
    assert (inv[("drm", "cheetah_run")]["finished"], inv[("drm", "cheetah_run")]["running"]) == (4, 1)
    assert inv[("drqv2", "cheetah_run")]["failed"] == 1 and inv[("sac", "hopper")]["finished"] == 2


def test_unequal_grids_are_interpolated_and_said_so(report):
    _, _, res = report
    drm = res["envs"]["cheetah_run"]["curves"]["frames"]["drm"]
    assert "interpolated" in drm["note"]
    assert drm["n"][-1] == 4 and drm["n"][2] == 5  # the running seed stops at 500k: a gap, not a fill
    assert "no interpolation" in res["envs"]["cheetah_run"]["curves"]["frames"]["drqv2"]["note"]


def test_aggregates_normalise_and_skip_envs_without_bounds(report):
    _, _, res = report
    agg = res["aggregate"]
    (group,) = agg["groups"]
    assert group["papers"] == ["drm", "drqv2"] and group["envs"] == ["cheetah_run"]
    assert group["budget"] == 1_000_000 and group["normalization"]["cheetah_run"]["high"] == 1000.0
    assert agg["dropped"] == [
        {
            "budget": 1000,
            "paper": "sac",
            "env": "hopper",
            "reason": "no normalisation bounds for hopper (common/evaluation/references/envs.yaml)",
        }
    ]
    # drm's finals (~800) all beat drqv2's (~700) with noise sd 20: P(drm > drqv2) = 1 exactly
    (poi,) = agg["probability_of_improvement"]
    assert (poi["x"], poi["y"], poi["point"], poi["budget"]) == ("drm", "drqv2", 1.0, 1_000_000)
    drm_iqm = group["metrics"]["drm"]["iqm"]["point"]
    assert 0.75 < drm_iqm < 0.85  # normalised by 1000
    se = group["sample_efficiency"]["drm"]
    assert se["x"][0] == 0 and se["x"][-1] == 1_000_000 and se["point"][-1] > se["point"][0]


def test_results_match_golden(report):
    """results.json of `make_runs` against tests/data/report_golden_results.json. After a deliberate change
    of the results (bump results.SCHEMA when their layout changes), regenerate it with
    `RLREPRO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_report.py -k golden`; review the diff.
    Last regenerated for SCHEMA 2: per-(paper, budget) table rows with the median over runs and the paper's
    95% CI, aggregates as a list of comparable groups per budget, dropped (paper, env) with reasons."""
    _, _, res = report
    got = _masked({k: v for k, v in res.items() if not k.startswith("_")})
    if os.environ.get("RLREPRO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    _approx_equal(got, json.loads(GOLDEN.read_text()))


def test_outputs_are_self_contained(report):
    _, out, res = report
    html = (out / "index.html").read_text()
    assert html.count("<img") == len(res["_figures"]) >= 5
    assert "src='data:image/png;base64," in html and "src='http" not in html and "href=" not in html
    md = (out / "report.md").read_text()
    assert (
        "![" in md
        and "figures/curves_cheetah_run.png" in md
        and (out / "figures" / "aggregate_1.png").exists()
    )


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_line_errors(tmp_path, report):
    root, _, _ = report
    with pytest.raises(ConfigError, match="does not exist"):
        load_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no run directories in"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="no run directories given"):
        load_runs([])
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.yaml").write_text("foo: 1\n")
    with pytest.raises(ConfigError, match="lacks paper.name"):
        load_run(tmp_path / "odd")
    runs = load_runs([root])
    with pytest.raises(ConfigError, match="mix envs"):
        single_env(runs)
    with pytest.raises(ConfigError, match="no runs selected"):
        single_env([])
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        build_report([root], tmp_path / "foreign", **FAST)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_missing_metrics_leave_a_run_out_with_a_note(tmp_path):
    run = write_run_dir(tmp_path / "r1", "sac", "hopper", 1, [0, 10], [1.0, 2.0])
    (run / "eval.jsonl").unlink()
    write_run_dir(tmp_path / "r2", "sac", "hopper", 2, [0, 10], [1.0, 3.0])
    (tmp_path / "r2" / "eval.jsonl").write_text('{"frame": 0, "episode_return": 1.0}\n{"frame": 10}\n{"fra')
    runs = load_runs([tmp_path])
    assert "no eval.jsonl" in runs[0].notes and "2 eval row(s)" in runs[1].notes[0]
    scores, left = final_scores(runs)
    # r1 finished but has no curve: it keeps status.json's score; r2's cut rows are skipped
    assert scores.tolist() == [2.0, 3.0] and left == []
    assert frame_curves([runs[1]]).values.tolist() == [[1.0]]


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "common.report", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: no run directories in")
    assert len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- HTML and W&B
def test_html_renders_figures_in_headless_chromium(report, tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        pytest.skip("no chromium binary: apt-get install -y chromium")
    _, out, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,4000",
            f"--screenshot={shot}",
            (out / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    # tab10 blue/orange lines and bands exist only if the inlined PNG figures were decoded and drawn
    blue = np.all(np.abs(img - np.array([31, 119, 180]) / 255) < 0.08, axis=-1).sum()
    orange = np.all(np.abs(img - np.array([255, 127, 14]) / 255) < 0.08, axis=-1).sum()
    assert blue > 200 and orange > 200, (blue, orange)


def test_wandb_spec_builds_offline(report, monkeypatch):
    from common.report.wandb_report import build, publish, spec_json

    monkeypatch.setenv("WANDB_MODE", "disabled")
    _, out, res = report
    spec = json.loads(spec_json(build(res)))
    text = json.dumps(spec)
    assert "eval/episode_return" in text and "paper.name" in text
    assert "IQM" in text and "data:image/png;base64" in text
    assert "Per environment" in text and "Provenance" in text
    message = publish(res, project="rlrepro", entity=None, out=out)
    assert "not uploaded" in message and json.loads((out / "wandb_report.json").read_text())["blocks"]


# ------------------------------------------------------------------------------------- regressions
def _results(*paths: Path) -> dict:
    """results.json content (no figures) of the runs under `paths`."""
    from common.report.results import build_results

    return build_results(load_runs(paths), **FAST)


def _finals(root: Path, paper: str, env: str, finals: list[float], budget: int = 1_000_000) -> None:
    """Finished runs of `paper` on `env` (seeds 1, 2, ...) whose final scores are `finals`."""
    for seed, final in enumerate(finals, 1):
        path = root / f"{paper}_{env}_{budget}_s{seed}"
        write_run_dir(path, paper, env, seed, [0, budget], [0.0, final])


def test_env_table_median_is_the_median_over_runs(tmp_path):
    _finals(tmp_path, "drm", "cheetah_run", [0.0, 0.0, 0.0, 10.0, 990.0])  # mean 200, median 0
    (row,) = _results(tmp_path)["envs"]["cheetah_run"]["table"]
    assert row["mean"]["point"] == pytest.approx(200.0)
    assert row["median"]["point"] == 0.0 and row["median"]["lower"] == 0.0
    assert row["iqm"]["point"] == pytest.approx(10 / 3)  # trims one run from each end


def test_one_run_reached_through_several_paths_is_counted_once(tmp_path):
    runs = tmp_path / "runs"
    original = write_run_dir(runs / "drm" / "s1", "drm", "cheetah_run", 1, [0, 10], [0.0, 5.0])
    write_run_dir(runs / "drm" / "s2", "drm", "cheetah_run", 2, [0, 10], [0.0, 6.0])
    shutil.copytree(original, tmp_path / "backup" / "s1")
    early = tmp_path / "early" / "s1"  # a copy taken while the run was still going
    shutil.copytree(original, early)
    (early / "status.json").write_text(json.dumps({"state": "running"}))
    (early / "eval.jsonl").write_text(json.dumps({"frame": 0, "episode_return": 0.0}) + "\n")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "s1").symlink_to(original)
    given = [tmp_path / "early", runs, runs / "drm", original, tmp_path / "links" / "s1", tmp_path / "backup"]
    loaded = load_runs(given)
    assert [(r.seed, r.state, r.final) for r in loaded] == [(1, "finished", 5.0), (2, "finished", 6.0)]
    kept = loaded[0]
    assert kept.path == original.resolve()  # finished beats the running copy; then the first given
    assert sorted(p.parent.name for p, _ in kept.duplicates) == ["backup", "early", "links"]
    (note,) = [n for n in _results(*given)["notes"] if "counted once" in n]
    assert all(f"{d}/s1" in note for d in ("backup", "early", "links")) and "running" in note


def test_runs_of_different_budgets_are_not_pooled(tmp_path):
    for budget, base in ((500_000, 300.0), (1_000_000, 700.0)):
        _finals(tmp_path, "drqv2", "cheetah_run", [base, base + 10, base + 20], budget)
        _finals(tmp_path, "drm", "cheetah_run", [base + 5, base + 15, base + 25], budget)
    res = _results(tmp_path)
    rows = {(r["paper"], r["frames"]): r for r in res["envs"]["cheetah_run"]["table"]}
    assert sorted(rows) == [("drm", 500_000), ("drm", 1_000_000), ("drqv2", 500_000), ("drqv2", 1_000_000)]
    assert rows[("drqv2", 500_000)]["mean"]["point"] == pytest.approx(310.0)
    assert rows[("drqv2", 1_000_000)]["paper_ref"]["frames"] == 1_000_000  # compared at its own budget
    assert "budgets differ" in rows[("drqv2", 500_000)]["paper_note"]
    agg = res["aggregate"]
    assert [(g["budget"], g["papers"]) for g in agg["groups"]] == [
        (500_000, ["drm", "drqv2"]),
        (1_000_000, ["drm", "drqv2"]),
    ]
    assert agg["groups"][0]["metrics"]["drqv2"]["mean"]["point"] == pytest.approx(0.31)
    # per budget drm's runs beat drqv2's 6 times in 9 (pooled across budgets it would be 21 in 36)
    poi = {r["budget"]: r["point"] for r in agg["probability_of_improvement"]}
    assert poi == {500_000: pytest.approx(2 / 3), 1_000_000: pytest.approx(2 / 3)}
    for notes in (res["notes"], agg["notes"]):
        assert any("500,000" in n and "1,000,000" in n and "per budget" in n for n in notes)


def test_every_comparable_group_is_aggregated_with_true_reasons(tmp_path):
    from common.report.render import blocks

    for env in ("cheetah_run", "walker_walk"):
        _finals(tmp_path, "drqv2", env, [600.0, 620.0])
        _finals(tmp_path, "drm", env, [700.0, 720.0, 740.0])
    _finals(tmp_path, "sac", "quadruped_run", [300.0, 310.0])  # another env set: a group of its own
    _finals(tmp_path, "stream_ac", "cheetah_run", [100.0])  # one finished run
    _finals(tmp_path, "stream_ac", "hopper", [50.0, 60.0])  # no normalisation bounds for hopper
    res = _results(tmp_path)
    agg = res["aggregate"]
    assert [(g["papers"], g["envs"]) for g in agg["groups"]] == [
        (["drm", "drqv2"], ["cheetah_run", "walker_walk"]),
        (["sac"], ["quadruped_run"]),
    ]
    assert agg["groups"][1]["metrics"]["sac"]["mean"]["point"] == pytest.approx(0.305)
    reasons = {(d["paper"], d["env"]): d["reason"] for d in agg["dropped"]}
    assert reasons == {
        ("stream_ac", "cheetah_run"): "too few finished runs on cheetah_run (1 finished, 2 needed)",
        (
            "stream_ac",
            "hopper",
        ): "no normalisation bounds for hopper (common/evaluation/references/envs.yaml)",
    }
    (note,) = [n for n in agg["notes"] if n.startswith("stream_ac")]
    assert "no normalised aggregate" in note and "cheetah_run" in note and "hopper" in note
    headings = [b.text for b in blocks(res, {}) if b.kind == "h3"]
    assert "Group 2: sac on quadruped_run (1,000,000 frames)" in headings


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        (710.0, "inconclusive (intervals overlap)"),  # below the paper's 728.5 but inside its 95% CI
        (650.0, "below paper"),
        (800.0, "above paper"),
    ],
)
def test_verdict_weighs_our_ci_against_the_papers(tmp_path, final, expected):
    _finals(tmp_path, "drqv2", "cheetah_run", [final + d for d in (-2.0, -1.0, 0.0, 1.0, 2.0)])
    (row,) = _results(tmp_path)["envs"]["cheetah_run"]["table"]
    assert row["verdict"] == expected and row["paper_label"] == "paper mean ± 95% CI (10 seeds)"


def test_verdict_without_paper_spread_says_so():
    from common.report.results import verdict

    assert verdict(100.0, 90.0, 110.0) == "inconclusive (paper mean inside our CI; paper spread unknown)"
    assert verdict(100.0, 101.0, 110.0) == "above paper (paper spread unknown)"
    assert verdict(100.0, 101.0, 110.0, 95.0, 105.0) == "inconclusive (intervals overlap)"
    assert verdict(100.0, 80.0, 90.0, 95.0, 105.0) == "below paper"
    assert verdict(100.0, None, None, 95.0, 105.0).startswith("n/a")


def test_paper_marker_labels_its_error_bar(report):
    from common.report.figures import paper_marker

    _, _, res = report
    row = next(r for r in res["envs"]["cheetah_run"]["table"] if r["paper"] == "drqv2")
    x, y, yerr, label = paper_marker(row)
    iv = row["paper_interval"]
    assert x == 1_000_000 and y == pytest.approx(728.5, abs=0.05)
    assert yerr == [[pytest.approx(y - iv["lower"])], [pytest.approx(iv["upper"] - y)]]
    assert label == "drqv2: paper mean ± 95% CI (10 seeds)"
    bare = {**row, "paper_interval": None, "paper_label": "paper mean, spread not reported"}
    assert paper_marker(bare)[2:] == (None, "drqv2: paper mean, spread not reported")


def test_wandb_panels_filter_by_env_and_budget_and_leave_smoke_runs_out(tmp_path, monkeypatch):
    from common.report.wandb_report import build, spec_json

    monkeypatch.setenv("WANDB_MODE", "disabled")
    runs = tmp_path / "runs"
    _finals(runs, "drqv2", "cheetah_run", [500.0, 510.0], 500_000)
    _finals(runs, "drqv2", "cheetah_run", [700.0, 710.0])
    _finals(runs, "drm", "walker_walk", [800.0, 810.0])
    smoke = write_run_dir(runs / "smoke", "drqv2", "cheetah_run", 9, [0, 400], [0.0, 1.0])
    (smoke / ".hydra").mkdir()
    (smoke / ".hydra" / "overrides.yaml").write_text("- paper=drqv2\n- env=cheetah_run\n- debug=smoke\n")
    res = build_report([runs], tmp_path / "out", **FAST)
    spec = json.loads(spec_json(build(res)))
    grids = [b["metadata"]["runSets"] for b in spec["blocks"] if "runSets" in b.get("metadata", {})]
    shown = []
    for runsets in grids:
        filters = [{f["key"]["name"]: f["value"] for f in rs["filters"]["filters"]} for rs in runsets]
        assert all(f["env.fast_render"] is False for f in filters)  # smoke runs set it true
        (where,) = {(f["env.name"], f["paper.train.num_frames"]) for f in filters}  # one env and budget
        shown += [(f["paper.name"], *where) for f in filters]
    assert sorted(shown) == [
        ("drm", "walker_walk", 1_000_000),
        ("drqv2", "cheetah_run", 500_000),
        ("drqv2", "cheetah_run", 1_000_000),
    ]
    text = json.dumps(spec)
    assert "Smoke runs (debug=smoke) are left out" in text and "drqv2/cheetah_run s9" in text


def test_run_dirs_are_found_by_their_files_at_any_depth(tmp_path):
    runs = tmp_path / "runs"
    sweep = runs / "multirun" / "2025-01-01_10-00-00"
    for num, seed in enumerate((1, 2)):
        run = write_run_dir(
            sweep / f"{num}_drqv2_cheetah_run_s{seed}", "drqv2", "cheetah_run", seed, [0], [1.0]
        )
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text("not: a run config\n")  # Hydra's copy: skipped
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    write_run_dir(runs / "sac" / "hopper" / "2025-01-02_s3", "sac", "hopper", 3, [0], [2.0])
    (runs / "sac" / "loop").symlink_to(runs)  # a link back up: not followed round again
    (tmp_path / "selected").mkdir()
    (tmp_path / "selected" / "latest").symlink_to(sweep)  # a folder of links to sweeps
    found = [(r.paper, r.env, r.seed) for r in load_runs([runs])]
    assert found == [("drqv2", "cheetah_run", 1), ("drqv2", "cheetah_run", 2), ("sac", "hopper", 3)]
    linked = [(r.paper, r.env, r.seed) for r in load_runs([tmp_path / "selected"])]
    assert linked == [("drqv2", "cheetah_run", 1), ("drqv2", "cheetah_run", 2)]


def _retag(path: Path, **keys: str) -> None:
    import yaml

    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg.update(keys)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_tags_and_datasets_are_separate_arms_and_tasks(tmp_path):
    """Runs of one paper with different tags (a baseline variant) or different datasets (offline splits)
    are reported apart: `paper[tag]` arms and `env/dataset` tasks, never pooled."""
    for seed in (1, 2):
        _retag(write_run_dir(tmp_path / f"ac{seed}", "stream_ac", "hopper", seed, [0, 10], [0.0, 900.0]))
        b = write_run_dir(tmp_path / f"sgd{seed}", "stream_ac", "hopper", seed, [0, 10], [0.0, 10.0])
        _retag(b, tag="barrier_sgd")
        for split, final in (("medium", 40.0), ("expert", 90.0)):
            d = write_run_dir(tmp_path / f"{split}{seed}", "td3bc", "hopper", seed, [0, 10], [0.0, final])
            _retag(d, dataset=split)
    res = build_report([tmp_path], tmp_path / "out", **FAST)
    assert sorted(res["envs"]) == ["hopper", "hopper/expert", "hopper/medium"]
    hopper = {r["paper"]: r for r in res["envs"]["hopper"]["table"]}
    assert sorted(hopper) == ["stream_ac", "stream_ac[barrier_sgd]"]
    assert hopper["stream_ac"]["mean"]["point"] == 900.0
    assert hopper["stream_ac[barrier_sgd]"]["mean"]["point"] == 10.0
    assert res["envs"]["hopper/expert"]["table"][0]["mean"]["point"] == 90.0
    assert res["envs"]["hopper/medium"]["table"][0]["mean"]["point"] == 40.0
