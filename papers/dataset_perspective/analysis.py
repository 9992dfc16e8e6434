"""The paper's analysis across runs: every (dataset, seed) pair as one row of TQ, SACo and each learner's
normalised return, with the learner families its findings name (in our words: learners that bootstrap a
value function, DQN / QR-DQN / REM, need datasets with high SACo; learners held near the behaviour policy,
BCQ / CQL / CRR, do well when TQ and SACo are high; BC is competitive when TQ is high).

    python -m papers.dataset_perspective.analysis table RUN_DIR [RUN_DIR ...] --out table.json \\
        [--figure figure.png]

Each RUN_DIR is a finished `paper=dataset_perspective` run (its results.json). The table maps
`<env>/<dataset type>/s<seed>` to {"tq", "saco", <learner>: normalised return, "<family>": the family's mean};
`common.report.claims` rank-correlates its columns (claim kind `rank_correlation`). A run missing a learner
(one chosen by `paper.learner`, or a shorter `paper.learners`) leaves that column, and the families that need
it, out of its rows. Runs of one seed that trained different learners on the same datasets (the same Minari
ids, TQ and SACo: a later run reuses the stored datasets) join into one row per dataset; the same learner
twice is refused. `--figure` plots every learner's normalised return against TQ and SACo over all rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError

FAMILIES = {  # the paper's groups (Sec. 5, Fig. 5)
    "value_family": ("dqn", "qrdqn", "rem"),
    "constraint_family": ("bcq", "cql", "crr"),
}
MEASURES = ("tq", "saco")


def _learner_rows(results: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, float]]]:
    """Per row key: the dataset's identity (id, TQ, SACo) and each learner's finite normalised return."""
    out = {}
    for kind, measures in results["datasets"].items():
        scores = {}
        for learner, per_kind in results.get("learners", {}).items():
            if kind in per_kind:
                value = float(per_kind[kind]["normalized_return"])
                if np.isfinite(value):  # NaN: undefined (the online run never beat random)
                    scores[learner] = value
        ident = {"id": measures.get("id"), "tq": float(measures["tq"]), "saco": float(measures["saco"])}
        out[f"{results['env']}/{kind}/s{results['seed']}"] = (ident, scores)
    return out


def _finish(ident: dict[str, Any], scores: dict[str, float]) -> dict[str, float] | None:
    row = {m: ident[m] for m in MEASURES if np.isfinite(ident[m])}
    if "tq" not in row or not scores:  # a dataset no learner trained on has nothing to correlate
        return None
    row.update(scores)
    for family, members in FAMILIES.items():
        if all(m in scores for m in members):
            row[family] = float(np.mean([scores[m] for m in members]))
    return row


def _same_dataset(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same Minari id and the same TQ and SACo (NaN, an undefined TQ, equals NaN)."""
    return a["id"] == b["id"] and all(a[m] == b[m] or (np.isnan(a[m]) and np.isnan(b[m])) for m in MEASURES)


def table(run_dirs: Sequence[Path]) -> dict[str, dict[str, float]]:
    merged: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}
    for d in run_dirs:
        path = Path(d) / "results.json"
        if not path.exists():
            raise ConfigError(f"{path} is missing: {d} is not a finished paper=dataset_perspective run")
        for key, (ident, scores) in _learner_rows(json.loads(path.read_text())).items():
            if key not in merged:
                merged[key] = (ident, dict(scores))
                continue
            seen, have = merged[key]
            if not _same_dataset(seen, ident):
                raise ConfigError(
                    f"{d}: {key} is another dataset than in an earlier run ({ident} vs {seen}); join only "
                    f"runs that share their datasets (same seed and settings)"
                )
            twice = sorted(set(have) & set(scores))
            if twice:
                raise ConfigError(f"{d}: {', '.join(twice)} on {key} is in an earlier run too; pass it once")
            have.update(scores)
    out = {key: row for key, pair in merged.items() if (row := _finish(*pair)) is not None}
    if not out:
        raise ConfigError("no learner results in these runs; run the learners first")
    return out


def figure(table_rows: dict[str, dict[str, float]], path: Path) -> None:
    """Each learner's normalised return against TQ and SACo, one marker per (dataset, seed) row, with the
    learner's least-squares line: the paper's scatter plots pooled over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = set(MEASURES) | set(FAMILIES)
    learners = sorted({k for row in table_rows.values() for k in row} - skip)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, measure in zip(axes, MEASURES, strict=True):
        for i, name in enumerate(learners):
            pts = np.array([(r[measure], r[name]) for r in table_rows.values() if measure in r and name in r])
            if len(pts) == 0:
                continue
            color = plt.get_cmap("tab10")(i % 10)
            ax.scatter(pts[:, 0], pts[:, 1], color=color, s=18, alpha=0.8, label=name.upper())
            if len(np.unique(pts[:, 0])) > 1:
                slope, icept = np.polyfit(pts[:, 0], pts[:, 1], 1)
                xs = np.linspace(pts[:, 0].min(), pts[:, 0].max(), 2)
                ax.plot(xs, slope * xs + icept, color=color, lw=1)
        ax.set_xlabel({"tq": "TQ", "saco": "SACo"}[measure])
        ax.axhline(1.0, color="silver", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("normalised return (best evaluation)")
    axes[1].legend(fontsize="small", ncol=3)
    fig.suptitle(f"offline learners against dataset TQ and SACo ({len(table_rows)} dataset x seed rows)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m papers.dataset_perspective.analysis")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="one row per (env, dataset, seed): TQ, SACo, normalised returns")
    t.add_argument("runs", nargs="+", type=Path)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--figure", type=Path, help="also plot every learner against TQ and SACo (PNG)")
    args = ap.parse_args(argv)
    try:
        out = table(args.runs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(out)} rows -> {args.out}")
    if args.figure is not None:
        figure(out, args.figure)
        print(f"figure -> {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
