"""Reports from run directories: `python -m common.report RUNS... [--out DIR] [--compare DIR] [--wandb]`.

Writes `index.html` (self-contained), `report.md`, `results.json` (every number) and `figures/`.
Reads run directories only; no network unless `--wandb` saves a W&B report while online.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.evaluation.compare import load_decisions
from common.evaluation.runs import load_runs

OUTPUTS = ("index.html", "report.md", "results.json", "figures", "wandb_report.json")


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
) -> dict[str, Any]:
    """Read the runs, compute the results, draw the figures and write the report into `out`."""
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
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_all(results, out)
    bs = blocks(results, figures)
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    (out / "report.md").write_text(markdown(bs, figures, out))
    (out / "index.html").write_text(html_page(bs, figures))
    results["_blocks"] = bs
    results["_figures"] = figures
    return results
