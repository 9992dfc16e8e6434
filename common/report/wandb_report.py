"""The report as a W&B Report (wandb-workspaces v2): curves as line plots, statistics as Markdown/images.

W&B panels only aggregate mean with stderr/std/min-max, so bootstrap CIs, IQM, profiles, P(X > Y) and
AdaStop go in as Markdown tables and inline images. Building the spec needs no network; `save()` does, and
is only called when W&B is online (`common.logger.wandb_mode`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.logger import wandb_mode
from common.report.figures import data_uri
from common.report.render import Block

# Images larger than this are left out of the W&B report (the HTML report holds them all).
MAX_IMAGE_BYTES = 400_000
PER_ENV = "Per environment"  # the report section whose env subsections get W&B panels


def _markdown_table(blk: Block) -> str:
    cell = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(map(cell, blk.header)) + " |", "|" + "---|" * len(blk.header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in blk.rows])


def build(
    results: dict[str, Any], project: str = "rlrepro", entity: str | None = None, offline: bool = True
) -> Any:
    """A wandb-workspaces Report object. Runsets are left without entity/project when `entity` is None so
    that the spec serialises offline (naming them makes wandb look the project up on the server)."""
    import wandb_workspaces.reports.v2 as wr

    blocks: list[Any] = []
    runs = results["provenance"]["runs"]
    section = ""
    for blk in results["_blocks"]:
        if blk.kind == "h1":
            continue  # the report's title
        if blk.kind == "h2":
            section = blk.text
            blocks.append(wr.H2(text=blk.text))
            if section == PER_ENV:
                blocks.append(wr.MarkdownBlock(text=runset_note(runs)))
        elif blk.kind == "h3":
            blocks.append(wr.H3(text=blk.text))
            if section == PER_ENV and blk.text in results["envs"]:
                blocks += _panels(wr, blk.text, runs, project, entity)
        elif blk.kind == "p":
            blocks.append(wr.MarkdownBlock(text=blk.text))
        elif blk.kind == "table":
            blocks.append(wr.MarkdownBlock(text=_markdown_table(blk)))
        elif blk.kind == "figure":
            path = Path(results["_figures"][blk.figure])
            if path.stat().st_size <= MAX_IMAGE_BYTES:
                blocks.append(wr.Image(url=data_uri(path), caption=blk.text))
    # An explicit entity keeps the constructor from calling wandb.Api() (which needs a login) offline.
    who: dict[str, Any] = {"entity": entity} if entity else ({"entity": "offline"} if offline else {})
    description = next((b.text for b in results["_blocks"] if b.kind == "p"), "")
    return wr.Report(project=project, title="rlrepro report", description=description, blocks=blocks, **who)


def runset_filter(paper: str, env: str, budget: int | None, tag: str = "", dataset: str | None = None) -> str:
    """W&B filter of one run set: one paper (and tag) on one env (and dataset) at one frame budget, smoke
    runs excluded (debug=smoke sets env.fast_render, which real runs leave false)."""
    parts = [f"Config('paper.name') == '{paper}'", f"Config('env.name') == '{env}'"]
    if tag:
        parts.append(f"Config('tag') == '{tag}'")
    if dataset:
        parts.append(f"Config('dataset') == '{dataset}'")
    if budget is not None:
        parts.append(f"Config('paper.train.num_frames') == {int(budget)}")
    parts.append("Config('env.fast_render') == False")
    return " and ".join(parts)


def runset_note(runs: list[dict[str, Any]]) -> str:
    """What the W&B panels show, and the smoke runs they leave out."""
    smoke = [r for r in runs if r.get("smoke")]
    text = (
        "W&B panels: one per (env, frame budget); each run set is one paper's runs on that env at that "
        "budget (filters on paper.name, env.name and paper.train.num_frames), so runs of different envs or "
        "budgets are never averaged together. Smoke runs (debug=smoke) are left out of every run set "
        "(filter env.fast_render = False), so they are never averaged with real runs"
    )
    if smoke:
        text += "; left out here: " + ", ".join(f"{r['paper']}/{r['env']} s{r['seed']}" for r in smoke)
    return text + "."


def _panels(wr: Any, env: str, runs: list[dict[str, Any]], project: str, entity: str | None) -> list[Any]:
    """One panel grid per frame budget of `env`'s real (non-smoke) runs: a run set per paper, filtered by
    paper, env and budget, and a line plot of their mean eval return."""
    where = {"entity": entity, "project": project} if entity else {}
    real = [r for r in runs if r.get("task", r["env"]) == env and not r.get("smoke")]
    budgets = sorted({r.get("budget") for r in real}, key=lambda b: (b is None, b or 0))
    grids = []
    for budget in budgets:
        arms = {r.get("arm", r["paper"]): r for r in real if r.get("budget") == budget}
        frames = "unknown budget" if budget is None else f"{budget:,} frames"
        runsets = [
            wr.Runset(
                name=f"{arm} ({frames})",
                filters=runset_filter(r["paper"], r["env"], budget, r.get("tag") or "", r.get("dataset")),
                groupby=["config.paper.name"],
                **where,
            )
            for arm, r in sorted(arms.items())
        ]
        panel = wr.LinePlot(
            title=f"{env}, {frames}: eval return",
            x="Step",
            y=["eval/episode_return"],
            groupby="config.paper.name",
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
        grids.append(wr.PanelGrid(runsets=runsets, panels=[panel]))
    return grids


def spec_json(report: Any) -> str:
    """The report's spec as JSON, built without network (uses wandb-workspaces' private `_to_model`)."""
    return report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True)


def publish(results: dict[str, Any], project: str, entity: str | None, out: Path) -> str:
    """Save the report to W&B when online; otherwise write its spec to `out/wandb_report.json`."""
    online = wandb_mode("auto") == "online"
    report = build(results, project=project, entity=entity if online else None, offline=not online)
    if online:
        report.save()
        return f"W&B report saved: {report.url}"
    path = out / "wandb_report.json"
    path.write_text(json.dumps(json.loads(spec_json(report)), indent=1))
    return f"W&B offline: report spec written to {path} (not uploaded)"
