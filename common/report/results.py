"""Every number of a report, computed from run directories only: the content of `results.json`."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from common.evaluation.references import PaperInterval, PaperScore, paper_interval, reference_for
from common.evaluation.runs import (
    STATES,
    Curves,
    Run,
    align,
    frame_curves,
    group_runs,
    score_matrix,
    time_curves,
)
from common.evaluation.stats import (
    METRICS,
    bootstrap_ci,
    bootstrap_intervals,
    performance_profile,
    probability_of_improvement_ci,
    sample_efficiency_curve,
)

SCHEMA = 2
CONFIDENCE = 0.95
AGGREGATE_METRICS = ("iqm", "mean", "median", "optimality_gap")
# Per-env table (one env): "median" is the median over runs (stats' "median" is over tasks of task means).
TABLE_METRICS = {"mean": METRICS["mean"], "iqm": METRICS["iqm"], "median": METRICS["run_median"]}
PROVENANCE_KEYS = (
    "created",
    "host",
    "platform",
    "python",
    "torch",
    "packages",
    "hardware",
    "slurm_job_id",
    "command",
)


def _f(x: Any) -> Any:
    """Plain floats/lists for JSON; NaN becomes None."""
    if isinstance(x, np.ndarray):
        return _f(x.tolist())
    if isinstance(x, (list, tuple)):
        return [_f(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _interval(iv: Any) -> dict[str, Any]:
    return {"point": _f(iv.point), "lower": _f(iv.lower), "upper": _f(iv.upper)}


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("rlrepro", "numpy", "matplotlib", "adastop", "wandb-workspaces"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# --------------------------------------------------------------------------------------- provenance
def provenance(runs: Sequence[Run], root: Path) -> dict[str, Any]:
    per_run = []
    for r in runs:
        git = r.info.get("git") or {}
        row = {
            "path": _rel(r.path, root),
            "paper": r.paper,
            "env": r.env,
            "seed": r.seed,
            "tag": r.tag,
            "dataset": r.dataset,
            "arm": r.arm,
            "task": r.task,
            "state": r.state,
            "git_sha": git.get("sha"),
            "git_dirty": git.get("dirty"),
            "config_hash": r.config_hash,
            "overrides": r.overrides,
            "budget": r.budget,
            "smoke": r.smoke,
        }
        row.update({k: r.info.get(k) for k in PROVENANCE_KEYS if k in r.info})
        per_run.append(row)
    shas = sorted({str(p["git_sha"]) for p in per_run})
    return {
        "runs": per_run,
        "git_shas": shas,
        "any_dirty": any(bool(p["git_dirty"]) for p in per_run),
        "config_hashes": sorted({str(p["config_hash"]) for p in per_run}),
        "report_tools": _versions(),
    }


def duplicate_notes(runs: Sequence[Run], root: Path) -> list[str]:
    """One note per run reached through more than one path: the paths dropped, counted once."""
    return [
        f"{_rel(r.path, root)} ({r.paper}, {r.env}, seed {r.seed}) counted once; dropped as its duplicates: "
        + "; ".join(f"{_rel(p, root)} ({why})" for p, why in r.duplicates)
        for r in runs
        if r.duplicates
    ]


def inventory(by_env: dict[str, dict[str, list[Run]]]) -> list[dict[str, Any]]:
    """Per (paper, env): runs by state, and the seeds other papers ran on this env that this one lacks."""
    rows = []
    for env, papers in by_env.items():
        all_seeds = sorted({r.seed for runs in papers.values() for r in runs})
        for paper, runs in papers.items():
            counts = {s: sum(r.state == s for r in runs) for s in STATES}
            seeds = {r.seed for r in runs}
            rows.append(
                {
                    "paper": paper,
                    "env": env,
                    **counts,
                    "finished_without_score": sum(r.state == "finished" and not r.complete for r in runs),
                    "missing_seeds": [s for s in all_seeds if s not in seeds],
                    "seeds": sorted(seeds),
                    "notes": sorted({n for r in runs for n in r.notes}),
                }
            )
    return rows


# ------------------------------------------------------------------------------------------- curves
def curve_band(curves: Curves, reps: int, seed: int) -> dict[str, Any]:
    """Mean over runs at each grid point with a bootstrap CI where >= 2 runs have data there."""
    n = np.sum(np.isfinite(curves.values), axis=0)
    mean = np.full(curves.grid.size, np.nan)
    lower, upper = mean.copy(), mean.copy()
    for j in np.flatnonzero(n):
        col = curves.values[np.isfinite(curves.values[:, j]), j]
        mean[j] = col.mean()
        if col.size >= 2:
            iv = bootstrap_ci(col[:, None], "mean", reps=reps, confidence=CONFIDENCE, seed=seed)
            lower[j], upper[j] = float(iv.lower), float(iv.upper)
    return {
        "x": _f(curves.grid),
        "mean": _f(mean),
        "lower": _f(lower),
        "upper": _f(upper),
        "n": _f(n),
        "note": curves.note,
    }


def env_curves(papers: dict[str, list[Run]], reps: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"frames": {}, "time": {}}
    for paper, runs in papers.items():
        with_data = [r for r in runs if r.frames.size]
        if not with_data:
            continue
        out["frames"][paper] = curve_band(frame_curves(with_data), reps, seed)
        out["time"][paper] = curve_band(time_curves(with_data), reps, seed)
        out["frames"][paper]["partial_runs"] = [r.seed for r in with_data if not r.complete]
    return out


# ---------------------------------------------------------------------------------- paper vs ours
SPREAD_UNKNOWN = "paper spread unknown"


def verdict(
    paper_mean: float | None,
    lower: float | None,
    upper: float | None,
    paper_lower: float | None = None,
    paper_upper: float | None = None,
) -> str:
    """Ours against the paper: our CI against the paper's CI (its spread), or against its bare mean with
    the label "paper spread unknown" when the paper gives no spread."""
    if paper_mean is None:
        return "n/a"
    if lower is None or upper is None:
        return "n/a (fewer than 2 finished runs: no interval)"
    if paper_lower is None or paper_upper is None:
        if lower > paper_mean:
            return f"above paper ({SPREAD_UNKNOWN})"
        if upper < paper_mean:
            return f"below paper ({SPREAD_UNKNOWN})"
        return f"inconclusive (paper mean inside our CI; {SPREAD_UNKNOWN})"
    if lower > paper_upper:
        return "above paper"
    if upper < paper_lower:
        return "below paper"
    return "inconclusive (intervals overlap)"


def paper_label(ref: PaperScore | None, iv: PaperInterval | None) -> str:
    """What the paper's marker shows: its mean with a 95% CI over n seeds, or its bare mean."""
    if ref is None:
        return ""
    if iv is None:
        return "paper mean, spread not reported"
    return f"paper mean ± {int(round(iv.confidence * 100))}% CI ({iv.seeds} seeds)"


def _by_budget(runs: Sequence[Run]) -> dict[int | None, list[Run]]:
    """Runs grouped by frame budget, ascending (unknown budget last)."""
    out: dict[int | None, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (r.budget is None, r.budget or 0)):
        out.setdefault(r.budget, []).append(r)
    return out


def env_table(env: str, papers: dict[str, list[Run]], reps: int, seed: int) -> list[dict[str, Any]]:
    """One row per (paper, budget): our final scores (mean, IQM, median over runs, with CIs) against the
    paper's number at that budget."""
    rows = []
    for paper, all_runs in papers.items():
        for budget, runs in _by_budget(all_runs).items():
            rows.append(_table_row(env, paper, budget, runs, reps, seed))
    return rows


def _table_row(
    env: str, paper: str, budget: int | None, runs: list[Run], reps: int, seed: int
) -> dict[str, Any]:
    done = [r for r in runs if r.complete]
    left_out = [r for r in runs if not r.complete]
    scores = np.asarray([r.final for r in done], dtype=np.float64)
    ref, why = reference_for(paper, env, budget)
    piv = paper_interval(ref, CONFIDENCE, reps=reps, seed=seed) if ref else None
    row: dict[str, Any] = {
        "paper": paper,
        "env": env,
        "n": int(scores.size),
        "frames": budget,
        "left_out": [{"seed": r.seed, "state": r.state, "last_frame": r.final_frame} for r in left_out],
        "paper_ref": ref.to_dict() if ref else None,
        "paper_note": why,
        "paper_interval": piv.to_dict() if piv else None,
        "paper_label": paper_label(ref, piv),
    }
    if scores.size >= 2:
        ivs = bootstrap_intervals(scores[:, None], TABLE_METRICS, reps=reps, seed=seed)
        row.update({k: _interval(v) for k, v in ivs.items()})
    elif scores.size == 1:
        row.update({k: {"point": float(scores[0]), "lower": None, "upper": None} for k in TABLE_METRICS})
    if scores.size:
        row["std"] = float(scores.std(ddof=1)) if scores.size > 1 else None
        m = row["mean"]
        row["verdict"] = verdict(
            ref.mean if ref else None,
            m["lower"],
            m["upper"],
            piv.lower if piv else None,
            piv.upper if piv else None,
        )
        row["ratio_to_paper"] = m["point"] / ref.mean if ref and ref.mean else None
    else:
        row["verdict"] = "n/a (no finished run)"
    return row


# -------------------------------------------------------------------------------------- aggregates
def _frames(budget: int | None) -> str:
    return "unknown budget" if budget is None else f"{budget:,} frames"


def _usable(by_env: dict[str, dict[str, list[Run]]]) -> tuple[dict[str, set[str]], list[dict[str, Any]]]:
    """Per paper, the envs it can enter a normalised aggregate with (>= 2 finished runs and bounds); and
    each (paper, env) left out, with the reason."""
    usable: dict[str, set[str]] = defaultdict(set)
    dropped = []
    for env, group in by_env.items():
        for paper, runs in group.items():
            done = [r for r in runs if r.complete]
            bounds = (done or runs)[0].bounds
            if len(done) < 2:
                why = f"too few finished runs on {env} ({len(done)} finished, 2 needed)"
            elif bounds is None:
                why = f"no normalisation bounds for {env} (common/evaluation/references/envs.yaml)"
            else:
                usable[paper].add(env)
                continue
            dropped.append({"paper": paper, "env": env, "reason": why})
    return usable, dropped


def _comparable_groups(usable: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Papers grouped by the exact env set they can be aggregated on: (papers, envs), larger groups first."""
    sets: dict[frozenset[str], list[str]] = defaultdict(list)
    for paper in sorted(usable):
        if usable[paper]:
            sets[frozenset(usable[paper])].append(paper)
    return sorted(
        ((papers, sorted(envs)) for envs, papers in sets.items()),
        key=lambda g: (-len(g[0]), -len(g[1]), g[1], g[0]),
    )


def aggregate_group(
    by_env: dict[str, dict[str, list[Run]]],
    papers: list[str],
    envs: list[str],
    budget: int | None,
    reps: int,
    curve_reps: int,
    seed: int,
) -> dict[str, Any]:
    """IQM/mean/median/OG with CIs, profiles and sample efficiency (normalised) of papers on one env set."""
    out: dict[str, Any] = {
        "budget": budget,
        "papers": papers,
        "envs": envs,
        "normalization": {},
        "metrics": {},
        "notes": [],
    }
    for env in envs:
        b = next(r for r in by_env[env][papers[0]] if r.complete).bounds
        assert b is not None
        out["normalization"][env] = {"low": b.low, "high": b.high, "source": b.source, "kind": b.kind}
    matrices = {}
    for p in papers:
        matrix, note = score_matrix({e: by_env[e][p] for e in envs}, envs)
        if note:
            out["notes"].append(f"{p}: {note}")
        matrices[p] = matrix
        ivs = bootstrap_intervals(matrix, AGGREGATE_METRICS, reps=reps, seed=seed)
        out["metrics"][p] = {k: _interval(v) for k, v in ivs.items()}
    top = max(1.0, max(float(m.max()) for m in matrices.values()))
    taus = np.linspace(0.0, top, 41)
    out["profiles"] = {"taus": _f(taus)}
    for p in papers:
        out["profiles"][p] = _interval(performance_profile(matrices[p], taus, reps=curve_reps, seed=seed))
    out["sample_efficiency"] = sample_efficiency(by_env, envs, papers, curve_reps, seed)
    return out


def _scored_envs(by_env: dict[str, dict[str, list[Run]]], paper: str) -> set[str]:
    """Envs where `paper` has >= 2 finished runs."""
    return {env for env, group in by_env.items() if sum(r.complete for r in group.get(paper, [])) >= 2}


def aggregates(runs: Sequence[Run], reps: int, curve_reps: int, seed: int) -> dict[str, Any]:
    """Normalised aggregates of every comparable group and P(X > Y), per frame budget (never pooled)."""
    out: dict[str, Any] = {"groups": [], "dropped": [], "probability_of_improvement": [], "notes": []}
    budgets = _by_budget(runs)
    if len(budgets) > 1:
        out["notes"].append(
            "runs have different frame budgets ("
            + ", ".join(_frames(b) for b in budgets)
            + "): aggregates and P(X > Y) are computed per budget; runs of different budgets are not pooled"
        )
    for budget, budget_runs in budgets.items():
        by_env = group_runs(budget_runs)
        usable, dropped = _usable(by_env)
        out["dropped"] += [{"budget": budget, **d} for d in dropped]
        for papers, envs in _comparable_groups(usable):
            out["groups"].append(aggregate_group(by_env, papers, envs, budget, reps, curve_reps, seed))
        all_papers = sorted({p for g in by_env.values() for p in g})
        for p in all_papers:
            if not usable.get(p):
                out["notes"].append(
                    f"{p} ({_frames(budget)}) is in no normalised aggregate: "
                    + "; ".join(d["reason"] for d in dropped if d["paper"] == p)
                )
        # P(X > Y) per pair on the envs both ran (>= 2 finished runs each); rank-based: raw returns suffice.
        for x, y in combinations(all_papers, 2):
            common = sorted(_scored_envs(by_env, x) & _scored_envs(by_env, y))
            if not common:
                continue
            sx = score_matrix({e: by_env[e][x] for e in common}, common, normalized=False)[0]
            sy = score_matrix({e: by_env[e][y] for e in common}, common, normalized=False)[0]
            iv = probability_of_improvement_ci(sx, sy, reps=curve_reps, seed=seed)
            out["probability_of_improvement"].append(
                {"budget": budget, "x": x, "y": y, "envs": common, **_interval(iv)}
            )
    return out


def sample_efficiency(
    by_env: dict[str, dict[str, list[Run]]], envs: list[str], papers: list[str], reps: int, seed: int
) -> dict[str, Any]:
    """IQM of normalised returns against frames, over runs x envs, on frames every kept run reached."""
    out: dict[str, Any] = {}
    for p in papers:
        per_env = []
        for env in envs:
            runs = sorted((r for r in by_env[env][p] if r.complete), key=lambda r: (r.seed, str(r.path)))
            per_env.append(runs)
        m = min(len(rs) for rs in per_env)
        kept = [rs[:m] for rs in per_env]
        end = min(float(r.frames[-1]) for rs in kept for r in rs)
        grid = np.unique(np.concatenate([r.frames for rs in kept for r in rs]).astype(np.float64))
        grid = grid[grid <= end]
        cube = []
        for rs in kept:
            c = align([r.frames.astype(np.float64) for r in rs], [r.returns for r in rs], grid)
            b = rs[0].bounds
            assert b is not None
            cube.append(b.normalize(c.values))
        scores = np.stack(cube, axis=1)  # (runs, envs, points)
        if not np.all(np.isfinite(scores)):
            out[p] = {"note": "runs do not share a frame range starting at their first evaluation"}
            continue
        iv = sample_efficiency_curve(scores, "iqm", reps=reps, seed=seed)
        out[p] = {
            "x": _f(grid),
            **_interval(iv),
            "note": f"{m} run(s) per env; grid up to {int(end):,} frames",
        }
    return out


# ---------------------------------------------------------------------------------------------- all
def build_results(
    runs: Sequence[Run],
    *,
    reps: int = 50_000,
    curve_reps: int = 2_000,
    seed: int = 0,
    adastop: Sequence[dict[str, Any]] = (),
    generated: str | None = None,
) -> dict[str, Any]:
    """The full results of a report, JSON-ready."""
    root = Path(os.path.commonpath([str(r.path.parent) for r in runs]))
    by_env = group_runs(runs)
    notes = []
    if len(by_env) > 1:
        notes.append(f"runs span {len(by_env)} envs ({', '.join(by_env)}): curves and tables are per env")
    budgets = sorted({r.budget for r in runs if r.budget is not None})
    if len(budgets) > 1:
        notes.append(
            f"runs have different frame budgets ({', '.join(f'{b:,}' for b in budgets)} frames): per-env "
            "tables have one row per (paper, budget); aggregates and P(X > Y) are computed per budget"
        )
    notes += duplicate_notes(runs, root)
    return {
        "schema": SCHEMA,
        "generated": generated or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": str(root),
        "bootstrap": {
            "method": "stratified percentile bootstrap (runs resampled within each env)",
            "reps": reps,
            "curve_reps": curve_reps,
            "seed": seed,
            "confidence": CONFIDENCE,
        },
        "provenance": provenance(runs, root),
        "inventory": inventory(by_env),
        "envs": {
            env: {"table": env_table(env, papers, reps, seed), "curves": env_curves(papers, curve_reps, seed)}
            for env, papers in by_env.items()
        },
        "aggregate": aggregates(runs, reps, curve_reps, seed),
        "adastop": list(adastop),
        "notes": notes,
    }
