"""The results index `results/README.md`: one row per paper of `conf/paper/`, with its page or a reason.

    python -m common.report.index            # write results/README.md
    python -m common.report.index --check    # exit 1 when a paper has neither a page nor a reason

A paper is covered by a page that lists it under `papers:` in `results/<page>/page.yaml`; a paper without
one needs an entry in `results/not_reproduced.yaml` saying why. Pages that check a method rather than a
paper plugin (AdaStop, rliable, HPO) list no paper and appear in their own table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError
from common.report.claims import CLAIMS_FILE, PAGE_FILE, VERDICTS, load_page

ROOT = Path(__file__).resolve().parents[2]
REASONS_FILE = "not_reproduced.yaml"


def papers(root: Path = ROOT) -> list[str]:
    """Every paper registered in conf/paper/."""
    return sorted(p.stem for p in (root / "conf" / "paper").glob("*.yaml"))


def pages(results: Path) -> dict[str, dict[str, Any]]:
    """Every results page: its page.yaml and, once made, its claims.json."""
    out = {}
    for spec_path in sorted(results.glob(f"*/{PAGE_FILE}")):
        page = spec_path.parent
        spec = load_page(page)
        made = page / CLAIMS_FILE
        out[page.name] = {"spec": spec, "data": json.loads(made.read_text()) if made.exists() else None}
    return out


def reasons(results: Path) -> dict[str, str]:
    path = results / REASONS_FILE
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must map paper names to reasons")
    return {str(k): str(v).strip() for k, v in data.items()}


def uncovered(root: Path = ROOT) -> list[str]:
    """Papers of conf/paper/ with neither a made page nor a reason."""
    results = root / "results"
    made = {p for page in pages(results).values() if page["data"] for p in page["spec"].get("papers") or []}
    why = reasons(results)
    return [p for p in papers(root) if p not in made and p not in why]


def _verdicts(data: dict[str, Any] | None) -> str:
    if not data:
        return "not made yet"
    if not data["claims"]:
        return "no claim checked"
    counts = {v: sum(c["verdict"] == v for c in data["claims"]) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def render(root: Path = ROOT) -> str:
    results = root / "results"
    all_pages = pages(results)
    why = reasons(results)
    lines = [
        "# Results",
        "",
        "Every paper registered in `conf/paper/`, with the claim checked on this project's CPU budget and",
        "the verdict per claim (holds / fails / inconclusive, each with a 95% CI), or the reason it is not",
        "reproduced here. Pages are made from real runs by `python -m common.report` (the report) and",
        "`python -m common.report.claims results/<page>` (the verdicts); each page lists the commands that",
        "regenerate it. This file: `python -m common.report.index` (`make results`).",
        "",
        "| paper | claim checked | budget | verdicts | page |",
        "|---|---|---|---|---|",
    ]
    for paper in papers(root):
        covering = [name for name, pg in all_pages.items() if paper in (pg["spec"].get("papers") or [])]
        if covering:
            for name in covering:
                spec, data = all_pages[name]["spec"], all_pages[name]["data"]
                claim = " ".join(str(spec.get("claim", "")).split())
                budget = " ".join(str(spec.get("budget_short", "")).split())
                lines.append(
                    f"| `{paper}` | {claim} | {budget} | {_verdicts(data)} | [{name}]({name}/README.md) |"
                )
        else:
            lines.append(
                f"| `{paper}` | not reproduced here: {why.get(paper, 'NO PAGE AND NO REASON')} | | | |"
            )
    methods = {n: pg for n, pg in all_pages.items() if not pg["spec"].get("papers")}
    if methods:
        lines += [
            "",
            "## Methods of the shared core",
            "",
            "| method | claim checked | budget | verdicts | page |",
            "|---|---|---|---|---|",
        ]
        for name, pg in methods.items():
            claim = " ".join(str(pg["spec"].get("claim", "")).split())
            budget = " ".join(str(pg["spec"].get("budget_short", "")).split())
            lines.append(
                f"| {pg['spec']['title']} | {claim} | {budget} | {_verdicts(pg['data'])} | "
                f"[{name}]({name}/README.md) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.report.index", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a paper has no page and no reason")
    args = parser.parse_args(argv)
    try:
        missing = uncovered()
        if args.check:
            if missing:
                print(f"error: no results page and no reason for: {', '.join(missing)}", file=sys.stderr)
                return 1
            print("every paper has a results page or a reason")
            return 0
        (ROOT / "results" / "README.md").write_text(render())
        print(f"{ROOT / 'results' / 'README.md'}" + (f" (missing: {', '.join(missing)})" if missing else ""))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
