"""The AdaStop driver: decisions on synthetic agents, resumption, bad input, and a real tiny comparison."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from common.evaluation.compare import Comparison, Settings, parse_args
from common.evaluation.runs import write_run_dir

ROOT = Path(__file__).resolve().parent.parent
MEANS = {"a": 10.0, "b": 0.0, "c": 5.0}


def fake_launch(means: dict[str, float], calls: list | None = None, fail_at: int | None = None):
    """A launcher writing finished run dirs whose score ~ N(mean, 1), fixed by (paper, seed)."""

    def launch(paper: str, seeds: list[int], sweep: Path) -> None:
        if calls is not None:
            calls.append((paper, list(seeds)))
        if fail_at is not None and len(calls or []) > fail_at:
            raise KeyboardInterrupt  # an interruption mid-comparison
        for seed in seeds:
            rng = np.random.default_rng([seed, sorted(means).index(paper)])
            score = means[paper] + rng.normal()
            write_run_dir(sweep / f"s{seed}", paper, "cartpole_swingup", seed, [0, 100], [0.0, score])

    return launch


def settings(papers=("a", "b", "c"), **kw) -> Settings:
    return Settings(papers=tuple(papers), env="cartpole_swingup", **{"n": 5, "K": 3, "B": 2000, **kw})


def test_known_ordering_is_decided(tmp_path):
    res = Comparison.open(tmp_path / "c", settings()).run(fake_launch(MEANS), log=lambda s: None)
    decisions = {(r["agent1"], r["agent2"]): r["decision"] for r in res["comparisons"]}
    assert decisions == {("a", "b"): "larger", ("a", "c"): "larger", ("b", "c"): "smaller"}
    assert res["finished"] and res["interims"] < 3  # a gap of 5 sd stops early
    assert all(n == 5 * res["interims"] for n in res["runs_used"].values())
    table = (tmp_path / "c" / "decisions.md").read_text()
    assert "**larger**" in table and "alpha=0.05" in table and "not proof of" in table
    assert json.loads((tmp_path / "c" / "decisions.json").read_text())["comparisons"] == res["comparisons"]


def test_equal_agents_are_equal_after_K_interims(tmp_path):
    same = {"a": 3.0, "b": 3.0}
    res = Comparison.open(tmp_path / "c", settings(("a", "b"))).run(fake_launch(same), log=lambda s: None)
    assert [r["decision"] for r in res["comparisons"]] == ["equal"]
    assert res["interims"] == 3 and res["runs_used"] == {"a": 15, "b": 15}


def test_interrupted_comparison_resumes_to_the_same_decisions(tmp_path):
    means = {"a": 1.0, "b": 0.0}
    full = Comparison.open(tmp_path / "full", settings(("a", "b"))).run(
        fake_launch(means), log=lambda s: None
    )

    calls: list = []
    with pytest.raises(KeyboardInterrupt):  # the 3rd launch (interim 1, paper a) is interrupted
        Comparison.open(tmp_path / "cut", settings(("a", "b"))).run(fake_launch(means, calls, 2), log=print)
    saved = json.loads((tmp_path / "cut" / "adastop.json").read_text())
    assert len(saved["interims"]) == 1
    calls2: list = []
    resumed = Comparison.open(tmp_path / "cut", settings(("a", "b"))).run(
        fake_launch(means, calls2), log=print
    )
    assert resumed["comparisons"] == full["comparisons"] and resumed["runs_used"] == full["runs_used"]
    assert ("a", [1, 2, 3, 4, 5]) not in calls2  # interim 0 is not trained again


def test_bad_input(tmp_path):
    Comparison.open(tmp_path / "c", settings(("a", "b"))).run(fake_launch(MEANS), log=lambda s: None)
    with pytest.raises(ConfigError, match="other settings"):
        Comparison.open(tmp_path / "c", settings(("a", "b"), n=3))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("")
    with pytest.raises(ConfigError, match="not a comparison directory"):
        Comparison.open(tmp_path / "other", settings())
    with pytest.raises(ConfigError, match="two or more papers"):
        parse_args(["paper=sac", "env=cartpole_swingup"])
    with pytest.raises(ConfigError, match="one env"):
        parse_args(["paper=sac,drqv2", "env=cartpole_swingup,walker_walk"])
    with pytest.raises(ConfigError, match="give the env"):
        parse_args(["paper=sac,drqv2"])
    with pytest.raises(ConfigError, match="sets seed= itself"):
        parse_args(["paper=sac,drqv2", "env=cartpole_swingup", "seed=3"])
    s, d = parse_args(["paper=sac,drqv2", "env=walker_walk", "debug=smoke", "--n", "2", "--K", "4"])
    assert s.papers == ("sac", "drqv2") and s.overrides == ("debug=smoke",) and (s.n, s.K) == (2, 4)
    assert d.parts[-2:] == ("walker_walk", "sac_vs_drqv2")


def test_failed_run_stops_with_its_directory(tmp_path):
    def failing(paper, seeds, sweep):
        for seed in seeds:
            write_run_dir(sweep / f"s{seed}", paper, "cartpole_swingup", seed, [0], [0.0], state="failed")

    with pytest.raises(ConfigError, match=r"s1 is failed \(RuntimeError: synthetic failure\)"):
        Comparison.open(tmp_path / "c", settings(("a", "b"))).run(failing, log=lambda s: None)


def test_cli_compares_two_real_papers_with_tiny_budgets(tmp_path):
    """End to end through run.py -m: sac vs stream_ac, smoke budgets, n=1, K=2 (4 runs, ~25 s)."""
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "common.evaluation.compare",
        "paper=sac,stream_ac",
        "env=cartpole_swingup",
        "debug=smoke",
        "--n",
        "1",
        "--K",
        "2",
        "--dir",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "decisions.json").read_text())
    assert res["comparisons"][0]["decision"] in ("larger", "smaller", "equal")
    assert res["finished"] and 1 <= res["runs_used"]["sac"] <= 2
    run = out / "sac" / "interim_0" / "s1"
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert res["scores"]["sac"][0] == json.loads((run / "status.json").read_text())["score"]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)  # already decided
    assert again.returncode == 0 and "written" in again.stdout
    bad = subprocess.run(cmd[:-4] + ["--n", "2", "--dir", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.splitlines()) == 1


def test_unknown_paper_stops_before_anything_trains(tmp_path):
    """Every arm is composed first: the bad arm is named with Hydra's error, and sac (listed first) never
    trains: no comparison or run directory is made."""
    out = tmp_path / "cmp"
    cmd = [
        sys.executable,
        "-m",
        "common.evaluation.compare",
        "paper=sac,no_such_paper",
        "env=cartpole_swingup",
    ]
    cmd += ["debug=smoke", "--n", "1", "--K", "2", "--dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not out.exists()
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: arm no_such_paper does not compose")
    assert "unknown paper 'no_such_paper'" in line and "sac" in line  # the available papers
