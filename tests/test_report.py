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
    # drqv2's paper number at 1M frames (728.5) against ours around 700: a verdict with the source cited
    ref = cheetah["drqv2"]["paper_ref"]
    assert ref["mean"] == pytest.approx(728.5, abs=0.05) and "drqv2@c0c650b" in ref["source"]
    expected = (
        "paper inside CI"
        if lo <= ref["mean"] <= hi
        else ("above paper" if lo > ref["mean"] else "below paper")
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
    assert agg["envs"] == ["cheetah_run"] and agg["normalization"]["cheetah_run"]["high"] == 1000.0
    assert any("hopper" in n for n in agg["notes"])
    # drm's finals (~800) all beat drqv2's (~700) with noise sd 20: P(drm > drqv2) = 1 exactly
    (poi,) = agg["probability_of_improvement"]
    assert (poi["x"], poi["y"], poi["point"]) == ("drm", "drqv2", 1.0)
    drm_iqm = agg["metrics"]["drm"]["iqm"]["point"]
    assert 0.75 < drm_iqm < 0.85  # normalised by 1000
    se = agg["sample_efficiency"]["drm"]
    assert se["x"][0] == 0 and se["x"][-1] == 1_000_000 and se["point"][-1] > se["point"][0]


def test_results_match_golden(report):
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
        "![" in md and "figures/curves_cheetah_run.png" in md and (out / "figures" / "aggregate.png").exists()
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
