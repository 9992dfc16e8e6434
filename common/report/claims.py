"""Claims checked against evidence: the verdicts of a results page (holds / fails / inconclusive, with CIs).

A results page is a folder `results/<page>/` with a `page.yaml` (what the paper claims, the budget, the
commands that made the runs, the arms and the claims) and, once made, `claims.json` (every claim's evidence
and verdict), `README.md` (the page) and `report/` (the full `python -m common.report` output).

    python -m common.report.claims results/<page>            # read the runs, write claims.json + README.md
    python -m common.report.claims results/<page> --check    # recompute verdicts from claims.json only

Every verdict is a pure function of the evidence stored in `claims.json` (samples, counts), so a page can be
re-rendered and its verdicts checked without the runs. Claim kinds (`kind:` in page.yaml):

* `greater`: mean(a) − mean(b) > margin. 95% percentile-bootstrap CI of the difference (a and b resampled
  independently): holds when the CI lies above the margin, fails when it lies at or below it (a zero-width
  CI at the margin, e.g. identical scores, shows no gain), else inconclusive.
* `equivalent`: |mean(a) − mean(b)| < margin (two one-sided tests in interval form): holds when the CI lies
  inside (−margin, margin), fails when it lies wholly outside, else inconclusive.
* `rate_at_most`: a rate k/n ≤ alpha (e.g. a family-wise error): exact Clopper-Pearson 95% interval; holds
  when its upper bound ≤ alpha, fails when its lower bound > alpha, else inconclusive.
* `rate_greater`: rate(a) − rate(b) > margin for arms of 0/1 values (`metric: diverged`: the share of runs
  that diverged): Newcombe's hybrid score interval of the difference (Wilson intervals per arm), which stays
  honest on a few runs with no events; same holds/fails rule as `greater`.
* `mean_below`: mean(a) < threshold (e.g. interims used before stopping): bootstrap CI of the mean; holds
  when its upper bound < threshold, fails when its lower bound ≥ threshold, else inconclusive.
* `aggregate_greater`: an aggregate over several tasks (`metric`: iqm, mean or median of every run's
  normalised score, as rliable pools runs × tasks) of arm a minus that of arm b > margin. Scores are
  normalised per task as (x − random) / (reference − random): `random` read from a JSON file of the page
  (`normalize: {file, key}`, a mapping task → score), `reference` the best arm's mean on that task over the
  arms of the page, or over `normalize.arms` (so the best of them scores 1 there); a task where no arm's
  mean beats random is left out (and listed), since nothing learned there. 95% CI by a stratified
  bootstrap: runs resampled within each task, for a and b independently. Same holds/fails rule as `greater`.
* `rank_correlation`: Spearman's ρ across tasks between two columns `x` and `y` of a per-task table (a JSON
  file of the page, `table: {file, key}`: task → {column: number, "inf" or null}) > margin, e.g. that the
  tasks one method needs more samples on are those another does too. "inf" (never solved) ranks last, ties
  get their average rank, a task missing either value is left out (and listed). The evidence is the two
  rank vectors. 95% CI by a paired bootstrap over tasks (resamples where a column is constant, so ρ is
  undefined, are dropped and counted): holds when the CI lies above the margin, fails when it lies at or
  below it, else inconclusive (also when ρ itself is undefined).

An arm is either a run selector (`paper`, `env`, `tag`, `dataset`, optional `metric`: `final`, `normalized`,
`diverged` or `json:<file>:<dotted key>`) over the page's run directories, or a value read from a JSON file
of the page (`file`, `key`: a dotted path to a number or a list of numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats as sps

from common.errors import ConfigError, RlreproError

CONFIDENCE = 0.95
REPS = 20_000
KINDS = (
    "greater",
    "equivalent",
    "rate_at_most",
    "rate_greater",
    "mean_below",
    "aggregate_greater",
    "rank_correlation",
)
AGGREGATES = ("iqm", "mean", "median")
VERDICTS = ("holds", "fails", "inconclusive")
PAGE_FILE = "page.yaml"
CLAIMS_FILE = "claims.json"


# ------------------------------------------------------------------------------------------ intervals
def mean_diff_ci(
    a: Sequence[float], b: Sequence[float], reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its percentile-bootstrap CI, resampling a and b independently.

    A one-element sample contributes no spread (it is resampled to itself), so the interval then reflects
    the other sample only; two one-element samples give a zero-width interval.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        raise ConfigError("a claim's arm has no values; check the page's runs and selectors")
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, x.size, (reps, x.size))].mean(axis=1)
    my = y[rng.integers(0, y.size, (reps, y.size))].mean(axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(mx - my, [tail, 100 - tail])
    return float(x.mean() - y.mean()), float(lo), float(hi)


def mean_ci(a: Sequence[float], reps: int = REPS, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) and its percentile-bootstrap CI."""
    return mean_diff_ci(a, [0.0], reps, seed)


def rate_ci(k: int, n: int) -> tuple[float, float, float]:
    """k/n and its exact (Clopper-Pearson) interval."""
    if n < 1 or not 0 <= k <= n:
        raise ConfigError(f"a rate needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return k / n, float(ci.low), float(ci.high)


def rate_diff_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """p_a − p_b of two 0/1 samples (e.g. diverged runs) and Newcombe's hybrid score interval (1998, method
    10): each rate's Wilson interval (scipy), combined as p_a − p_b ∓ sqrt of the two facing squared
    distances. Unlike a bootstrap, it stays wide on few runs with no events (0/3 vs 0/3: ±0.56)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0 or not np.isin(np.concatenate([x, y]), (0.0, 1.0)).all():
        raise ConfigError("a rate_greater claim's arms must hold 0/1 values (e.g. metric: diverged)")

    def wilson(v: np.ndarray) -> tuple[float, float, float]:
        ci = sps.binomtest(int(v.sum()), int(v.size)).proportion_ci(
            confidence_level=CONFIDENCE, method="wilson"
        )
        return float(v.mean()), float(ci.low), float(ci.high)

    (p1, l1, u1), (p2, l2, u2) = wilson(x), wilson(y)
    lo = p1 - p2 - float(np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    hi = p1 - p2 + float(np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    return p1 - p2, lo, hi


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair of x and y (nan where a row is constant)."""
    rx, ry = sps.rankdata(x, axis=-1), sps.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    norm = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (rx * ry).sum(-1) / np.where(norm > 0, norm, 1.0), np.nan)


def spearman_ci(
    x: Sequence[float], y: Sequence[float], reps: int = REPS, seed: int = 0
) -> tuple[float | None, float | None, float | None, int]:
    """Spearman's ρ of paired samples, its paired-bootstrap percentile CI, and how many resamples were
    dropped as undefined (a constant column). None where ρ (or every resample) is undefined."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.size < 3:
        raise ConfigError(f"a rank correlation needs 3 or more paired tasks, got {a.size} and {b.size}")
    point = float(_spearman_rows(a, b))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (reps, a.size))
    rhos = _spearman_rows(a[idx], b[idx])
    kept = rhos[np.isfinite(rhos)]
    if not np.isfinite(point) or kept.size == 0:
        return None, None, None, int(reps - kept.size)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(kept, [tail, 100 - tail])
    return point, float(lo), float(hi), int(reps - kept.size)


# -------------------------------------------------------------------------------------------- verdicts
def _normalised(values: dict[str, list[float]], bounds: dict[str, list[float]]) -> dict[str, np.ndarray]:
    out = {}
    for task, xs in values.items():
        lo, hi = bounds[task]
        out[task] = (np.asarray(xs, np.float64) - lo) / (hi - lo if hi != lo else 1.0)
    return out


def _aggregate(name: str, pooled: np.ndarray) -> np.ndarray:
    """`name` over the last axis (runs × tasks pooled); IQM trims int(n/4) from each end (scipy's rule)."""
    if name == "mean":
        return pooled.mean(axis=-1)
    if name == "median":
        return np.median(pooled, axis=-1)
    n = pooled.shape[-1]
    low = n // 4
    part = np.sort(pooled, axis=-1)
    return part[..., low : n - low].mean(axis=-1)


def aggregate_diff_ci(
    a: dict[str, list[float]],
    b: dict[str, list[float]],
    bounds: dict[str, list[float]],
    metric: str = "iqm",
    reps: int = REPS,
    seed: int = 0,
) -> tuple[float, float, float]:
    """aggregate(a) − aggregate(b) of normalised scores pooled over tasks, and its stratified-bootstrap CI
    (runs resampled within each task, a and b independently)."""
    if metric not in AGGREGATES:
        raise ConfigError(f"aggregate metric {metric!r} is not one of {', '.join(AGGREGATES)}")
    tasks = sorted(set(a) & set(b))
    if not tasks or set(a) != set(b):
        raise ConfigError(
            f"an aggregate claim needs both arms on the same tasks; a has {sorted(a)}, b has {sorted(b)}"
        )
    rng = np.random.default_rng(seed)
    na, nb = _normalised(a, bounds), _normalised(b, bounds)

    def resampled(scores: dict[str, np.ndarray]) -> np.ndarray:
        parts = [s[rng.integers(0, s.size, (reps, s.size))] for s in (scores[t] for t in tasks)]
        return np.concatenate(parts, axis=1)  # (reps, runs pooled over tasks)

    point = float(
        _aggregate(metric, np.concatenate([na[t] for t in tasks]))
        - _aggregate(metric, np.concatenate([nb[t] for t in tasks]))
    )
    diffs = _aggregate(metric, resampled(na)) - _aggregate(metric, resampled(nb))
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return point, float(lo), float(hi)


def verdict(kind: str, evidence: dict[str, Any], params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The verdict of one claim from its evidence: point, CI and the rule that decided."""
    margin = float(params.get("margin", 0.0))
    if kind == "rank_correlation":
        rho, low, high, dropped = spearman_ci(evidence["x"], evidence["y"], seed=seed)
        v = "inconclusive"
        if low is not None and high is not None:
            v = "holds" if low > margin else "fails" if high <= margin else "inconclusive"
        rule = (
            f"paired-bootstrap 95% CI of Spearman's ρ over {len(evidence['x'])} tasks vs {margin:g}: wholly "
            f"above → holds, at or below → fails ({dropped} of {REPS} resamples undefined, dropped)"
        )
        return {"verdict": v, "point": rho, "lower": low, "upper": high, "rule": rule}
    if kind == "greater":
        point, lo, hi = mean_diff_ci(evidence["a"], evidence["b"], seed=seed)
        v = "holds" if lo > margin else "fails" if hi <= margin else "inconclusive"
        rule = f"95% CI of mean(a) − mean(b) vs {margin:g}: wholly above → holds, at or below → fails"
    elif kind == "equivalent":
        if margin <= 0:
            raise ConfigError("an `equivalent` claim needs a positive margin")
        point, lo, hi = mean_diff_ci(evidence["a"], evidence["b"], seed=seed)
        v = (
            "holds"
            if -margin < lo and hi < margin
            else "fails"
            if lo > margin or hi < -margin
            else ("inconclusive")
        )
        rule = f"95% CI of mean(a) − mean(b) inside ±{margin:g} → holds, wholly outside → fails"
    elif kind == "rate_at_most":
        alpha = float(params["alpha"])
        point, lo, hi = rate_ci(int(evidence["k"]), int(evidence["n"]))
        v = "holds" if hi <= alpha else "fails" if lo > alpha else "inconclusive"
        rule = f"Clopper-Pearson 95% CI of k/n vs {alpha:g}: upper ≤ → holds, lower > → fails"
    elif kind == "rate_greater":
        point, lo, hi = rate_diff_ci(evidence["a"], evidence["b"])
        v = "holds" if lo > margin else "fails" if hi <= margin else "inconclusive"
        rule = (
            f"Newcombe 95% CI of rate(a) − rate(b) vs {margin:g}: wholly above → holds, at or below → fails"
        )
    elif kind == "aggregate_greater":
        metric = str(params.get("metric", "iqm"))
        point, lo, hi = aggregate_diff_ci(
            evidence["a"], evidence["b"], evidence["bounds"], metric=metric, seed=seed
        )
        v = "holds" if lo > margin else "fails" if hi <= margin else "inconclusive"
        rule = (
            f"stratified-bootstrap 95% CI of {metric.upper()}(a) − {metric.upper()}(b), normalised scores, "
            f"vs {margin:g}: wholly above → holds, at or below → fails"
        )
    elif kind == "mean_below":
        threshold = float(params["threshold"])
        point, lo, hi = mean_ci(evidence["a"], seed=seed)
        v = "holds" if hi < threshold else "fails" if lo >= threshold else "inconclusive"
        rule = f"95% CI of mean(a) vs {threshold:g}: upper < → holds, lower ≥ → fails"
    else:
        raise ConfigError(f"unknown claim kind {kind!r}; choose from {', '.join(KINDS)}")
    return {"verdict": v, "point": point, "lower": lo, "upper": hi, "rule": rule}


# ---------------------------------------------------------------------------------------- evidence
def _dotted(data: Any, key: str, where: str) -> Any:
    for part in key.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            raise ConfigError(f"{where} has no key {key!r}; check the claim's `key`")
    return data


def _numbers(value: Any, where: str) -> list[float]:
    """A number, a list of numbers, or a mapping's values (e.g. per-seed scores keyed by seed)."""
    values = (
        list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    )
    if not values or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
        raise ConfigError(f"{where} must be a finite number or a list of them, got {value!r}")
    return [float(v) for v in values]


def _run_metric(run: Any, metric: str, failed: str = "exclude") -> float | None:
    """A run's value: `final` (status score), `normalized` (by its bounds, ×100 as D4RL), `diverged`
    (1 or 0: a rate when averaged), or `json:<file>:<dotted key>` read from the run directory.
    `failed="last_eval"` scores a run that stopped with an error or diverged at its last evaluation instead
    of dropping it: dropping the runs a method breaks would flatter it."""
    if metric == "final":
        if failed == "last_eval" and run.state in ("failed", "diverged"):
            return run.final
        return run.final if run.complete else None
    if metric == "diverged":  # 1 for a run stopped by a non-finite loss/action/weight, 0 for a finished one
        return 1.0 if run.state == "diverged" else 0.0 if run.complete else None
    if metric == "normalized":
        if not run.complete or run.bounds is None:
            return None
        return float(100 * run.bounds.normalize(run.final))
    if metric.startswith("json:"):
        _, name, key = metric.split(":", 2)
        path = run.path / name
        if not run.complete or not path.exists():
            return None
        return float(_dotted(json.loads(path.read_text()), key, str(path)))
    raise ConfigError(f"unknown metric {metric!r}: final, normalized, diverged or json:<file>:<key>")


def _dataset(run: Any) -> str | None:
    cfg = yaml.safe_load((run.path / "config.yaml").read_text()) or {}
    ds = cfg.get("dataset")
    return ds if isinstance(ds, str) or ds is None else ds.get("split")


def select(runs: Sequence[Any], arm: dict[str, Any]) -> tuple[list[float], list[dict[str, Any]]]:
    """Values of the complete runs an arm selects, with each run's identity (seed, path)."""
    keys = ("paper", "env", "tag", "dataset")
    unknown = sorted(set(arm) - {*keys, "metric", "failed"})
    if unknown:
        raise ConfigError(
            f"unknown arm key(s) {unknown}; an arm selects by {', '.join(keys)} (+ metric, failed)"
        )
    failed = str(arm.get("failed", "exclude"))
    if failed not in ("exclude", "last_eval"):
        raise ConfigError(f"an arm's `failed` is exclude or last_eval, got {failed!r}")
    values, ids = [], []
    for r in sorted(runs, key=lambda r: (r.seed, str(r.path))):
        if "paper" in arm and r.paper != arm["paper"]:
            continue
        if "env" in arm and r.env != arm["env"]:
            continue
        if r.tag != str(arm.get("tag", "")):
            continue
        if "dataset" in arm and _dataset(r) != arm["dataset"]:
            continue
        value = _run_metric(r, str(arm.get("metric", "final")), failed)
        if value is not None:
            values.append(value)
            ids.append({"seed": r.seed, "run": r.path.name, "state": r.state})
    return values, ids


def gather(page: Path, spec: dict[str, Any], runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Every claim of page.yaml with its evidence and verdict."""
    arms = spec.get("arms") or {}
    out = []
    for i, claim in enumerate(spec.get("claims") or []):
        kind = claim.get("kind")
        where = f"{page / PAGE_FILE} claim {claim.get('id', i)}"
        evidence: dict[str, Any] = {}
        sources: dict[str, Any] = {}
        if kind == "aggregate_greater":
            evidence, sources = _aggregate_evidence(page, where, claim, arms, runs)
        elif kind == "rank_correlation":
            evidence, sources = _rank_evidence(page, where, claim)
        for role in ("a", "b", "k", "n"):
            if role not in claim or role in evidence:
                continue
            ref = claim[role]
            if isinstance(ref, str):
                if ref not in arms:
                    raise ConfigError(f"{where}: unknown arm {ref!r}; define it under `arms:`")
                values, ids = select(runs, arms[ref])
                if not values:
                    raise ConfigError(
                        f"{where}: arm {ref!r} selects no finished run; run the page's commands"
                    )
                evidence[role], sources[role] = values, {"arm": ref, **arms[ref], "runs": ids}
            elif isinstance(ref, dict) and "file" in ref:
                path = page / ref["file"]
                if not path.exists():
                    raise ConfigError(f"{where}: {path} is missing; run the page's commands")
                value = _dotted(json.loads(path.read_text()), str(ref["key"]), str(path))
                nums = _numbers(value, f"{path}:{ref['key']}")
                evidence[role] = nums[0] if role in ("k", "n") else nums
                sources[role] = dict(ref)
            else:
                raise ConfigError(f"{where}: `{role}` must name an arm or give file + key")
        params = {k: claim[k] for k in ("margin", "alpha", "threshold", "metric") if k in claim}
        out.append(
            {
                "id": str(claim.get("id", i)),
                "text": str(claim.get("text", "")),
                "kind": kind,
                "params": params,
                "evidence": evidence,
                "sources": sources,
                **verdict(str(kind), evidence, params),
            }
        )
    return out


def _by_task(runs: Sequence[Any], arm: dict[str, Any]) -> dict[str, list[float]]:
    """An arm's values per task (env name), for aggregate claims; `envs:` limits the tasks."""
    sub = {k: v for k, v in arm.items() if k != "envs"}
    envs = arm.get("envs")
    out: dict[str, list[float]] = {}
    for env in sorted({r.env for r in runs}):
        if envs is not None and env not in envs:
            continue
        values, _ = select(runs, {**sub, "env": env})
        if values:
            out[env] = values
    return out


def _aggregate_evidence(
    page: Path, where: str, claim: dict[str, Any], arms: dict[str, Any], runs: Sequence[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-task values of arms a and b, and each task's normalisation bounds (random, best arm's mean)."""
    for role in ("a", "b"):
        if claim.get(role) not in arms:
            raise ConfigError(f"{where}: `{role}` must name an arm defined under `arms:`")
    norm = claim.get("normalize")
    if not isinstance(norm, dict) or "file" not in norm or "key" not in norm:
        raise ConfigError(f"{where}: an aggregate claim needs `normalize: {{file, key}}` (random scores)")
    path = page / str(norm["file"])
    if not path.exists():
        raise ConfigError(f"{where}: {path} is missing; run the page's commands")
    random = _dotted(json.loads(path.read_text()), str(norm["key"]), str(path))
    reference_arms = norm.get("arms") or list(arms)
    unknown = sorted(set(reference_arms) - set(arms))
    if unknown:
        raise ConfigError(f"{where}: normalize.arms names unknown arm(s) {unknown}")
    per_arm = {name: _by_task(runs, arms[name]) for name in {*reference_arms, claim["a"], claim["b"]}}
    evidence = {role: per_arm[claim[role]] for role in ("a", "b")}
    bounds, excluded = {}, {}
    for task in sorted(evidence["a"]):
        if task not in random:
            raise ConfigError(f"{path}:{norm['key']} has no random score for task {task!r}")
        best = max(float(np.mean(per_arm[n][task])) for n in reference_arms if task in per_arm[n])
        if best <= float(random[task]):  # nothing learned there: (x − random)/(best − random) means nothing
            excluded[task] = f"no arm's mean ({best:.3g}) is above the random policy's ({random[task]:.3g})"
            for role in ("a", "b"):
                evidence[role] = {t: v for t, v in evidence[role].items() if t != task}
            continue
        bounds[task] = [float(random[task]), best]
    if not bounds:
        raise ConfigError(f"{where}: no task has an arm above the random policy; nothing to aggregate")
    sources = {role: {"arm": claim[role], **arms[claim[role]]} for role in ("a", "b")}
    sources["normalize"] = dict(norm)
    return {**evidence, "bounds": bounds, "excluded": excluded}, sources


def _table_value(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("inf", "infinity"):
        return float("inf")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not np.isnan(value):
        return float(value)
    raise ConfigError(f'{where} must be a number, "inf" or null, got {value!r}')


def _rank_evidence(page: Path, where: str, claim: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ranks of columns x and y over the tasks of the claim's table that have both."""
    ref = claim.get("table")
    if not isinstance(ref, dict) or "file" not in ref:
        raise ConfigError(f"{where}: a rank_correlation claim needs `table: {{file[, key]}}`")
    for col in ("x", "y"):
        if not isinstance(claim.get(col), str):
            raise ConfigError(
                f"{where}: a rank_correlation claim needs `{col}:` naming a column of the table"
            )
    path = page / str(ref["file"])
    if not path.exists():
        raise ConfigError(f"{where}: {path} is missing; run the page's commands")
    table = json.loads(path.read_text())
    if ref.get("key"):
        table = _dotted(table, str(ref["key"]), str(path))
    if not isinstance(table, dict):
        raise ConfigError(f"{path} must map each task to its columns")
    x, y = str(claim["x"]), str(claim["y"])
    tasks, xs, ys, left_out = [], [], [], {}
    for task, row in sorted(table.items()):
        vx = _table_value((row or {}).get(x), f"{path}:{task}.{x}")
        vy = _table_value((row or {}).get(y), f"{path}:{task}.{y}")
        if vx is None or vy is None:
            left_out[task] = f"no {x if vx is None else y} value"
            continue
        tasks.append(task)
        xs.append(vx)
        ys.append(vy)
    evidence = {
        "tasks": tasks,
        "x": [float(r) for r in sps.rankdata(xs)] if xs else [],  # inf ranks last, ties averaged
        "y": [float(r) for r in sps.rankdata(ys)] if ys else [],
        "columns": [x, y],
        "left_out": left_out,
    }
    return evidence, {"table": dict(ref), "x": x, "y": y}


# -------------------------------------------------------------------------------------------- pages
def load_page(page: Path) -> dict[str, Any]:
    path = page / PAGE_FILE
    if not path.exists():
        raise ConfigError(
            f"{page} has no {PAGE_FILE}; a results page starts from one (see results/README.md)"
        )
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or "title" not in spec:
        raise ConfigError(f"{path} must be a mapping with at least `title`")
    return spec


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:,.1f}"


def _arm_summary(evidence: dict[str, Any], role: str) -> str:
    v = evidence.get(role)
    if v is None:
        return ""
    if isinstance(v, list):
        return f"{_fmt(float(np.mean(v)))} (n={len(v)})"
    if isinstance(v, dict):
        return f"{sum(len(x) for x in v.values())} runs on {len(v)} tasks"
    return _fmt(float(v))


def render(spec: dict[str, Any], data: dict[str, Any]) -> str:
    """The page's Markdown from page.yaml and claims.json."""
    lines = [f"# {spec['title']}", ""]
    if spec.get("citation"):
        lines += [str(spec["citation"]).strip(), ""]
    if spec.get("summary"):
        lines += [str(spec["summary"]).strip(), ""]
    lines += [
        "## Verdicts",
        "",
        "| claim | verdict | a | b | estimate [95% CI] | rule |",
        "|---|---|---|---|---|---|",
    ]
    for c in data["claims"]:
        ev = c["evidence"]
        a = _arm_summary(ev, "a") or (f"k={ev['k']:g}" if "k" in ev else "")
        b = _arm_summary(ev, "b") or (f"n={ev['n']:g}" if "n" in ev else "")
        if c["kind"] == "rank_correlation":
            a, b = (f"{col} ranks ({len(ev['tasks'])} tasks)" for col in ev["columns"])
        est = f"{_fmt(c['point'])} [{_fmt(c['lower'])}, {_fmt(c['upper'])}]"
        lines.append(f"| {c['text']} | **{c['verdict']}** | {a} | {b} | {est} | {c['rule']} |")
    if not data["claims"]:
        lines.append("| no claim checked at this budget (see above) | — | | | | |")
    lines += [""]
    for c in data["claims"]:
        parts = []
        for role in ("a", "b"):
            v = c["evidence"].get(role)
            if isinstance(v, list) and len(v) <= 12:
                parts.append(f"{role} = [{', '.join(_fmt(float(x)) for x in v)}]")
            elif isinstance(v, list):
                parts.append(f"{role}: {len(v)} values")
        if c["kind"] == "rank_correlation":
            ev = c["evidence"]
            ranks = ", ".join(
                f"{t} {rx:g}/{ry:g}" for t, rx, ry in zip(ev["tasks"], ev["x"], ev["y"], strict=True)
            )
            parts.append(f"ranks {ev['columns'][0]}/{ev['columns'][1]}: {ranks}")
            parts += [f"left out {t} ({why})" for t, why in sorted(ev["left_out"].items())]
        if parts:
            lines.append(f"- `{c['id']}`: " + "; ".join(parts))
    if any(c["evidence"].get("a") is not None or "x" in c["evidence"] for c in data["claims"]):
        lines.append("")
    for c in data["claims"]:
        ev = c["evidence"]
        if "bounds" not in ev:
            continue
        lines += [
            f"Per task, `{c['id']}` (raw means; normalised by random → 0 and the best arm's mean → 1):",
            "",
            "| task | a | b | random | best arm |",
            "|---|---|---|---|---|",
        ]
        for task, (lo, hi) in sorted(ev["bounds"].items()):
            a, b = ev["a"][task], ev["b"][task]
            lines.append(
                f"| {task} | {_fmt(float(np.mean(a)))} (n={len(a)}) | {_fmt(float(np.mean(b)))} (n={len(b)}) "
                f"| {_fmt(lo)} | {_fmt(hi)} |"
            )
        for task, why in sorted((ev.get("excluded") or {}).items()):
            lines.append(f"| {task} | left out: {why} | | | |")
        lines.append("")
    for key, head in (("budget", "Budget"), ("machine", "Machine"), ("notes", "Notes")):
        if spec.get(key):
            lines += [f"## {head}", "", str(spec[key]).strip(), ""]
    figures = spec.get("figures") or []
    if figures:  # a paper's own plots, copied next to page.yaml by the page's commands
        lines += ["## Figures", ""]
        for fig in figures:
            lines += [f"![{fig['caption']}]({fig['file']})", "", f"*{fig['caption']}*", ""]
    if data.get("machine"):
        lines += [f"Measured on: {data['machine']}.", ""]
    if spec.get("commands"):
        lines += ["## Regenerate", "", "```bash", str(spec["commands"]).strip(), "```", ""]
    report = data.get("report")
    if report:
        lines += [
            "## Report",
            "",
            f"The full report of these runs (curves, tables, aggregates, provenance): [{report}/report.md]"
            f"({report}/report.md), [{report}/results.json]({report}/results.json).",
            "",
        ]
    lines += [
        "Evidence per claim (every sample, its runs, the rule) is in [claims.json](claims.json); "
        "`python -m common.report.claims results/<page> --check` recomputes each verdict from it.",
        "",
    ]
    return "\n".join(lines)


def _machine(runs: Sequence[Any]) -> str | None:
    for r in runs:
        hw = r.info.get("hardware") or {}
        if hw:
            return f"{hw.get('cpu', '?')}, {hw.get('cpus', '?')} logical CPUs, no GPU used"
    return None


def make_page(page: Path) -> dict[str, Any]:
    """Read the page's runs, compute every claim, write claims.json and README.md."""
    from common.evaluation.runs import load_runs

    spec = load_page(page)
    for fig in spec.get("figures") or []:
        if not isinstance(fig, dict) or not {"file", "caption"} <= set(fig):
            raise ConfigError(f"{page / PAGE_FILE}: each of `figures` needs file and caption, got {fig!r}")
        if not (page / str(fig["file"])).exists():
            raise ConfigError(f"{page / str(fig['file'])} is missing; run the page's commands")
    paths = [Path.cwd() / p for p in spec.get("runs") or []]
    runs = load_runs(paths) if paths else []
    if spec.get("report") and paths:
        from common.report import build_report

        build_report(paths, page / str(spec["report"]), relative=True)
    data = {
        "schema": 1,
        "title": spec["title"],
        "papers": list(spec.get("papers") or []),
        "claim": spec.get("claim", ""),
        "budget": spec.get("budget", ""),
        "machine": _machine(runs),
        "report": spec.get("report"),
        "claims": gather(page, spec, runs),
    }
    (page / CLAIMS_FILE).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    (page / "README.md").write_text(render(spec, data))
    return data


def check_page(page: Path) -> list[str]:
    """Recompute every verdict from claims.json; the ids whose verdict differs (empty: all agree)."""
    path = page / CLAIMS_FILE
    if not path.exists():
        raise ConfigError(f"{path} is missing; make the page first: python -m common.report.claims {page}")
    data = json.loads(path.read_text())
    return [
        c["id"]
        for c in data["claims"]
        if verdict(c["kind"], c["evidence"], c["params"])["verdict"] != c["verdict"]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.report.claims", description=__doc__.split("\n")[0]
    )
    parser.add_argument("pages", nargs="+", type=Path, help="results/<page> folders")
    parser.add_argument("--check", action="store_true", help="recompute verdicts from claims.json only")
    args = parser.parse_args(argv)
    try:
        for page in args.pages:
            if args.check:
                bad = check_page(page)
                if bad:
                    print(
                        f"error: {page}: verdicts differ from claims.json for {', '.join(bad)}",
                        file=sys.stderr,
                    )
                    return 1
                print(f"{page}: every verdict agrees with its evidence")
            else:
                data = make_page(page)
                counts = {v: sum(c["verdict"] == v for c in data["claims"]) for v in VERDICTS}
                print(f"{page}/README.md: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
