"""python -m common.report RUNS... [--out DIR] [--compare DIR] [--wandb]: a report from run directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import RlreproError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.report", description=__doc__)
    parser.add_argument("runs", nargs="*", help="run directories, or folders that contain them")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory (report/)")
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="an AdaStop comparison directory to include (repeatable)",
    )
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates for tables (50000)")
    parser.add_argument(
        "--curve-reps", type=int, default=2_000, help="replicates for curves, profiles (2000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    parser.add_argument(
        "--relative", action="store_true", help="project-relative paths only (for reports you commit)"
    )
    parser.add_argument(
        "--wandb", action="store_true", help="also build a W&B report (saved only when online)"
    )
    parser.add_argument("--entity", default=None, help="W&B entity (default: the logged-in user's)")
    parser.add_argument("--project", default="rlrepro", help="W&B project of the runs (rlrepro)")
    args = parser.parse_args(argv)
    try:
        from common.report import build_report

        results = build_report(
            args.runs,
            args.out,
            compare_dirs=args.compare,
            reps=args.reps,
            curve_reps=args.curve_reps,
            seed=args.seed,
            relative=args.relative,
        )
        print(f"report: {args.out / 'index.html'}, {args.out / 'report.md'}, {args.out / 'results.json'}")
        if args.wandb:
            from common.report.wandb_report import publish

            print(publish(results, project=args.project, entity=args.entity, out=args.out))
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
