"""Every number of a report, computed from run directories only: the content of `results.json`."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from common.evaluation.references import reference_for
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
    bootstrap_ci,
    bootstrap_intervals,
    performance_profile,
    probability_of_improvement_ci,
    sample_efficiency_curve,
)

SCHEMA = 1
CONFIDENCE = 0.95
AGGREGATE_METRICS = ("iqm", "mean", "median", "optimality_gap")
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
            "state": r.state,
            "git_sha": git.get("sha"),
            "git_dirty": git.get("dirty"),
            "config_hash": r.info.get("config_hash"),
            "overrides": r.overrides,
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
def verdict(paper_mean: float | None, lower: float | None, upper: float | None) -> str:
    if paper_mean is None:
        return "n/a"
    if lower is None or upper is None:
        return "n/a (fewer than 2 finished runs: no interval)"
    if paper_mean < lower:
        return "above paper"
    if paper_mean > upper:
        return "below paper"
    return "paper inside CI"


def env_table(env: str, papers: dict[str, list[Run]], reps: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for paper, runs in papers.items():
        done = [r for r in runs if r.complete]
        left_out = [r for r in runs if not r.complete]
        scores = np.asarray([r.final for r in done], dtype=np.float64)
        budgets = sorted({r.budget for r in done if r.budget is not None})
        frames = budgets[0] if len(budgets) == 1 else None
        ref, why = reference_for(paper, env, frames)
        row: dict[str, Any] = {
            "paper": paper,
            "env": env,
            "n": int(scores.size),
            "frames": frames,
            "left_out": [{"seed": r.seed, "state": r.state, "last_frame": r.final_frame} for r in left_out],
            "paper_ref": ref.to_dict() if ref else None,
            "paper_note": why,
        }
        if len(budgets) > 1:
            row["paper_note"] = f"runs have different budgets {budgets}: not compared with the paper"
        if scores.size >= 2:
            ivs = bootstrap_intervals(scores[:, None], ("mean", "iqm", "median"), reps=reps, seed=seed)
            row.update({k: _interval(v) for k, v in ivs.items()})
        elif scores.size == 1:
            row.update(
                {
                    k: {"point": float(scores[0]), "lower": None, "upper": None}
                    for k in ("mean", "iqm", "median")
                }
            )
        if scores.size:
            row["std"] = float(scores.std(ddof=1)) if scores.size > 1 else None
            m = row["mean"]
            row["verdict"] = verdict(ref.mean if ref else None, m["lower"], m["upper"])
            row["ratio_to_paper"] = m["point"] / ref.mean if ref and ref.mean else None
        else:
            row["verdict"] = "n/a (no finished run)"
        rows.append(row)
    return rows


# -------------------------------------------------------------------------------------- aggregates
def _scored_envs(by_env: dict[str, dict[str, list[Run]]], paper: str, need_bounds: bool) -> set[str]:
    """Envs where `paper` has >= 2 finished runs (and, if asked, normalisation bounds)."""
    return {
        env
        for env, group in by_env.items()
        if sum(r.complete for r in group.get(paper, [])) >= 2
        and (not need_bounds or group[paper][0].bounds is not None)
    }


def _aggregate_set(by_env: dict[str, dict[str, list[Run]]], papers: list[str]) -> tuple[list[str], list[str]]:
    """The papers and envs of the normalised aggregates: the largest group of papers sharing one env set
    (ties: more envs), so every paper is measured on the same envs."""
    sets = {p: frozenset(_scored_envs(by_env, p, need_bounds=True)) for p in papers}
    groups: dict[frozenset[str], list[str]] = {}
    for p, envs in sets.items():
        if envs:
            groups.setdefault(envs, []).append(p)
    if not groups:
        return [], []
    envs, members = max(groups.items(), key=lambda kv: (len(kv[1]), len(kv[0]), sorted(kv[0])))
    return members, sorted(envs)


def aggregates(
    by_env: dict[str, dict[str, list[Run]]], reps: int, curve_reps: int, seed: int
) -> dict[str, Any]:
    """IQM/mean/median/OG with CIs, profiles, sample efficiency (normalised) and P(X > Y) across envs."""
    all_papers = sorted({p for group in by_env.values() for p in group})
    papers, envs = _aggregate_set(by_env, all_papers)
    out: dict[str, Any] = {"papers": papers, "envs": envs, "normalization": {}, "notes": []}
    if set(papers) != set(all_papers):
        out["notes"].append(
            f"left out of normalised aggregates: {', '.join(sorted(set(all_papers) - set(papers)))} "
            f"(not >= 2 finished runs on exactly the envs {', '.join(envs) or '(none)'} "
            "with normalisation bounds)"
        )
    skipped = sorted(set(by_env) - set(envs))
    if skipped:
        out["notes"].append(
            f"envs not in the normalised aggregates: {', '.join(skipped)} (no normalisation bounds in "
            "common/evaluation/references/envs.yaml, or too few finished runs)"
        )
    if envs:
        for env in envs:
            b = by_env[env][papers[0]][0].bounds
            assert b is not None
            out["normalization"][env] = {"low": b.low, "high": b.high, "source": b.source, "kind": b.kind}
        out["metrics"], matrices = {}, {}
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
    # P(X > Y) per pair on the envs both ran (>= 2 finished runs each); rank-based, so raw returns suffice.
    out["probability_of_improvement"] = []
    for x, y in combinations(all_papers, 2):
        common = sorted(_scored_envs(by_env, x, False) & _scored_envs(by_env, y, False))
        if not common:
            continue
        sx = score_matrix({e: by_env[e][x] for e in common}, common, normalized=False)[0]
        sy = score_matrix({e: by_env[e][y] for e in common}, common, normalized=False)[0]
        iv = probability_of_improvement_ci(sx, sy, reps=curve_reps, seed=seed)
        out["probability_of_improvement"].append({"x": x, "y": y, "envs": common, **_interval(iv)})
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
        "aggregate": aggregates(by_env, reps, curve_reps, seed),
        "adastop": list(adastop),
        "notes": notes,
    }
