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
    papers = sorted({row["paper"] for e in results["envs"].values() for row in e["table"]})
    envs = list(results["envs"])
    for blk in results["_blocks"]:
        if blk.kind == "h1":
            continue  # the report's title
        if blk.kind == "h2":
            blocks.append(wr.H2(text=blk.text))
            if blk.text == "Per environment":
                blocks.append(_panels(wr, papers, envs, project, entity))
        elif blk.kind == "h3":
            blocks.append(wr.H3(text=blk.text))
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


def _panels(wr: Any, papers: list[str], envs: list[str], project: str, entity: str | None) -> Any:
    """One runset per paper (runs tagged with the paper's name by common.logger), one line plot per env."""
    where = {"entity": entity, "project": project} if entity else {}
    runsets = [
        wr.Runset(name=p, filters=f"Config('paper.name') = '{p}'", groupby=["config.env.name"], **where)
        for p in papers
    ]
    panels = [
        wr.LinePlot(
            title=f"{env}: eval return",
            x="Step",
            y=["eval/episode_return"],
            groupby="config.paper.name",
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
        for env in envs
    ]
    return wr.PanelGrid(runsets=runsets, panels=panels)


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
