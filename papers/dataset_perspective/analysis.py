"""The paper's analysis across runs: every (dataset, seed) pair as one row of TQ, SACo and each learner's
normalised return, with the learner families its findings name (in our words: learners that bootstrap a
value function, DQN / QR-DQN / REM, need datasets with high SACo; learners held near the behaviour policy,
BCQ / CQL / CRR, do well when TQ and SACo are high; BC is competitive when TQ is high).

    python -m papers.dataset_perspective.analysis table RUN_DIR [RUN_DIR ...] --out table.json

Each RUN_DIR is a finished `paper=dataset_perspective` run (its results.json). The table maps
`<env>/<dataset type>/s<seed>` to {"tq", "saco", <learner>: normalised return, "<family>": the family's mean};
`common.report.claims` rank-correlates its columns (claim kind `rank_correlation`). A run missing a learner
(one chosen by `paper.learner`) leaves that column, and the families that need it, out of its rows.
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


def rows(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The table rows of one run's results.json."""
    out: dict[str, dict[str, float]] = {}
    for kind, measures in results["datasets"].items():
        row = {"tq": float(measures["tq"]), "saco": float(measures["saco"])}
        for learner, per_kind in results.get("learners", {}).items():
            if kind in per_kind:
                row[learner] = float(per_kind[kind]["normalized_return"])
        row = {
            k: v for k, v in row.items() if np.isfinite(v)
        }  # NaN: undefined (the online run never beat random)
        for family, members in FAMILIES.items():
            if all(m in row for m in members):
                row[family] = float(np.mean([row[m] for m in members]))
        if "tq" in row and len(row) > 2:  # a dataset no learner trained on has nothing to correlate
            out[f"{results['env']}/{kind}/s{results['seed']}"] = row
    return out


def table(run_dirs: Sequence[Path]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for d in run_dirs:
        path = Path(d) / "results.json"
        if not path.exists():
            raise ConfigError(f"{path} is missing: {d} is not a finished paper=dataset_perspective run")
        out.update(rows(json.loads(path.read_text())))
    if not out:
        raise ConfigError("no learner results in these runs; run the learners first")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m papers.dataset_perspective.analysis")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="one row per (env, dataset, seed): TQ, SACo, normalised returns")
    t.add_argument("runs", nargs="+", type=Path)
    t.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        out = table(args.runs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(out)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
