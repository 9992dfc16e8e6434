"""Reports from run directories: `python -m common.report RUNS... [--out DIR] [--compare DIR] [--wandb]`.

Writes `index.html` (self-contained), `report.md`, `results.json` (every number) and `figures/`.
Reads run directories only; no network unless `--wandb` saves a W&B report while online.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.evaluation.compare import load_decisions
from common.evaluation.runs import load_runs

OUTPUTS = ("index.html", "report.md", "results.json", "figures", "wandb_report.json")
# An absolute prefix in front of one of the project's top-level folders (or its venv): dropped by `portable`.
_ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:[^\s\"'/]+/)+?(?=(?:runs|results|\.venv|conf|papers|common|bench)/)")


def portable(value: Any) -> Any:
    """Every string of a results dict with absolute paths made relative to the project
    (`/home/u/rlrepro/runs/x` becomes `runs/x`), so a committed report names no folder of the machine."""
    if isinstance(value, str):
        return _ABSOLUTE.sub("", value)
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    return value


def _check_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not a previous report (nothing is overwritten)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in OUTPUTS]
        if foreign and not (out / "results.json").exists():
            raise ConfigError(
                f"--out {out} holds other files ({', '.join(sorted(foreign)[:3])}); choose another"
            )


def build_report(
    paths: Sequence[str | Path],
    out: Path,
    *,
    compare_dirs: Sequence[Path] = (),
    reps: int = 50_000,
    curve_reps: int = 2_000,
    seed: int = 0,
    generated: str | None = None,
    relative: bool = False,
) -> dict[str, Any]:
    """Read the runs, compute the results, draw the figures and write the report into `out`.

    `relative`: absolute paths in the report become project-relative (`portable`), for committed reports.
    """
    from common.report.figures import draw_all
    from common.report.render import blocks, html_page, markdown
    from common.report.results import build_results

    if reps < 1 or curve_reps < 1:
        raise ConfigError(f"--reps and --curve-reps must be >= 1, got {reps}, {curve_reps}")
    _check_out(out)
    runs = load_runs(paths)
    adastop = [load_decisions(d) for d in compare_dirs]
    results = build_results(
        runs, reps=reps, curve_reps=curve_reps, seed=seed, adastop=adastop, generated=generated
    )
    if relative:
        results = portable(results)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_all(results, out)
    bs = blocks(results, figures)
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    (out / "report.md").write_text(markdown(bs, figures, out))
    (out / "index.html").write_text(html_page(bs, figures))
    results["_blocks"] = bs
    results["_figures"] = figures
    return results
