"""The report as blocks (headings, paragraphs, tables, figures), rendered to Markdown and to HTML."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.evaluation.compare import MEANING
from common.report.figures import data_uri


@dataclass
class Block:
    kind: str  # h1 | h2 | h3 | p | table | figure
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figure: str = ""  # figure name (results of figures.draw_all)


def _num(x: Any, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def _ci(iv: dict[str, Any] | None, digits: int = 4) -> str:
    if not iv:
        return "–"
    if iv.get("lower") is None:
        return _num(iv["point"], digits)
    return f"{_num(iv['point'], digits)} [{_num(iv['lower'], digits)}, {_num(iv['upper'], digits)}]"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "–" if value is None else str(value)


VERDICTS = ("above paper", "below paper", "inconclusive")


def summary(results: dict[str, Any]) -> str:
    """One sentence: how many rows were compared with a paper, and how they came out."""
    rows = [r for e in results["envs"].values() for r in e["table"]]
    counts = {v: sum(r["verdict"].startswith(v) for r in rows) for v in VERDICTS}
    text = (
        f"{len(rows)} (paper, env, budget) row(s); {sum(counts.values())} compared with a paper number at "
        f"our budget (our 95% CI against the paper's): "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + "."
    )
    return text


def _paper_cell(row: dict[str, Any]) -> str:
    """The paper's number with its 95% CI (or 'spread not reported'), seeds, frames and source."""
    ref, iv = row.get("paper_ref"), row.get("paper_interval")
    if not ref:
        return row["paper_note"] or "–"
    spread = (
        f"[{_num(iv['lower'])}, {_num(iv['upper'])}] (95% CI, {iv['seeds']} seeds)"
        if iv
        else "(spread not reported)"
    )
    return f"{_num(ref['mean'])} {spread}, {ref['frames']:,} frames; {ref['source']}"


def blocks(results: dict[str, Any], figures: dict[str, Path]) -> list[Block]:
    b: list[Block] = [Block("h1", "rlrepro report"), Block("p", summary(results))]
    boot = results["bootstrap"]
    prov = results["provenance"]

    # ----------------------------------------------------------------------------------- provenance
    b.append(Block("h2", "Provenance"))
    b.append(
        Block(
            "p",
            f"Generated {results['generated']} from run directories under `{results['root']}`. "
            f"Git SHA(s): {', '.join(s[:12] for s in prov['git_shas'])}; uncommitted changes in any run: "
            f"{'yes' if prov['any_dirty'] else 'no'}. Intervals: {boot['method']}, {boot['reps']:,} "
            f"replicates for tables and aggregates, {boot['curve_reps']:,} for curves, profiles and P(X>Y); "
            f"seed {boot['seed']}; {int(boot['confidence'] * 100)}% intervals. Report tools: "
            + ", ".join(f"{k} {v}" for k, v in prov["report_tools"].items())
            + ".",
        )
    )
    machine = ("host", "platform", "python", "torch", "packages", "hardware")
    shared = {
        k: prov["runs"][0].get(k)
        for k in machine
        if len({json.dumps(r.get(k), sort_keys=True) for r in prov["runs"]}) == 1
    }
    b.append(
        Block(
            "p",
            "Same for every run: "
            + "; ".join(f"{k}: {_short(v)}" for k, v in shared.items() if v is not None)
            + ".",
        )
    )
    varying = [k for k in machine if k not in shared]
    b.append(
        Block(
            "table",
            header=[
                "run",
                "paper",
                "env",
                "seed",
                "state",
                "budget",
                "git",
                "config hash",
                "overrides",
                "created",
                *varying,
            ],
            rows=[
                [
                    r["path"],
                    r["paper"],
                    r["env"],
                    str(r["seed"]),
                    r["state"] + (" (smoke)" if r.get("smoke") else ""),
                    "–" if r.get("budget") is None else f"{r['budget']:,}",
                    f"{(r['git_sha'] or '?')[:10]}{' dirty' if r['git_dirty'] else ''}",
                    str(r["config_hash"]),
                    " ".join(r["overrides"]),
                    str(r.get("created", "–")),
                    *(_short(r.get(k)) for k in varying),
                ]
                for r in prov["runs"]
            ],
        )
    )

    # ------------------------------------------------------------------------------------ inventory
    b.append(Block("h2", "Runs"))
    b.append(
        Block("p", "Runs per (paper, env) by state. Missing seeds: seeds another paper ran on this env.")
    )
    b.append(
        Block(
            "table",
            header=[
                "paper",
                "env",
                "finished",
                "preempted",
                "running",
                "failed",
                "unknown",
                "missing seeds",
                "notes",
            ],
            rows=[
                [
                    r["paper"],
                    r["env"],
                    str(r["finished"])
                    + (
                        f" ({r['finished_without_score']} without a score)"
                        if r["finished_without_score"]
                        else ""
                    ),
                    str(r["preempted"]),
                    str(r["running"]),
                    str(r["failed"]),
                    str(r["unknown"]),
                    ", ".join(map(str, r["missing_seeds"])) or "–",
                    "; ".join(r["notes"]) or "–",
                ]
                for r in results["inventory"]
            ],
        )
    )

    # ------------------------------------------------------------------------------------- per env
    b.append(Block("h2", "Per environment"))
    for env, data in results["envs"].items():
        b.append(Block("h3", env))
        if f"curves_{env}" in figures:
            b.append(
                Block(
                    "figure",
                    f"{env}: evaluation return against frames and wall-clock",
                    figure=f"curves_{env}",
                )
            )
        notes = sorted(
            {c["note"] for c in data["curves"]["frames"].values()}
            | {c["note"] for c in data["curves"]["time"].values()}
        )
        if notes:
            b.append(Block("p", "Curves: " + "; ".join(notes) + "."))
        rows = []
        for r in data["table"]:
            paper = _paper_cell(r)
            left = ", ".join(f"s{x['seed']} {x['state']} @ {x['last_frame']}" for x in r["left_out"]) or "–"
            rows.append(
                [
                    r["paper"],
                    "–" if r["frames"] is None else f"{r['frames']:,}",
                    str(r["n"]),
                    _ci(r.get("mean")),
                    _ci(r.get("iqm")),
                    _ci(r.get("median")),
                    paper,
                    r["verdict"],
                    _num(r.get("ratio_to_paper"), 3),
                    left,
                ]
            )
        b.append(
            Block(
                "table",
                header=[
                    "paper",
                    "budget (frames)",
                    "n",
                    "mean [95% CI]",
                    "IQM [95% CI]",
                    "median over runs [95% CI]",
                    "paper [95% CI]",
                    "verdict",
                    "ours / paper",
                    "left out (partial)",
                ],
                rows=rows,
            )
        )

    # ---------------------------------------------------------------------------------- aggregates
    agg = results["aggregate"]
    b.append(Block("h2", "Aggregate metrics"))
    b += aggregate_blocks(agg, figures)
    # ----------------------------------------------------------------------------------- AdaStop
    for res in results["adastop"]:
        s = res["settings"]
        b.append(Block("h2", f"AdaStop: {res['env']}"))
        b.append(
            Block(
                "p",
                f"alpha={s['alpha']}, K={s['K']}, n={s['n']}, B={s['B']}, beta={s['beta']}, "
                f"permutation seed={s['seed']}, overrides: {' '.join(s['overrides']) or '–'}; "
                f"{res['interims']} interim(s), {'finished' if res['finished'] else 'not finished'}. "
                + MEANING,
            )
        )
        b.append(
            Block(
                "table",
                header=["agent1", "agent2", "decision", "mean1", "mean2", "runs1", "runs2"],
                rows=[
                    [
                        r["agent1"],
                        r["agent2"],
                        r["decision"],
                        _num(r["mean1"]),
                        _num(r["mean2"]),
                        str(res["runs_used"][r["agent1"]]),
                        str(res["runs_used"][r["agent2"]]),
                    ]
                    for r in res["comparisons"]
                ],
            )
        )
    if results["notes"]:
        b.append(Block("h2", "Notes"))
        b += [Block("p", n) for n in results["notes"]]
    return b


def _budget(budget: int | None) -> str:
    return "unknown budget" if budget is None else f"{budget:,} frames"


def aggregate_blocks(agg: dict[str, Any], figures: dict[str, Path]) -> list[Block]:
    """One subsection per comparable group (papers sharing an env set, per budget), what was left out of
    the aggregates and why, and P(X > Y) per budget."""
    b: list[Block] = []
    for note in agg["notes"]:
        b.append(Block("p", note))
    if not agg["groups"]:
        b.append(
            Block("p", "No paper has ≥ 2 finished runs on an env with normalisation bounds: no aggregate.")
        )
    for i, g in enumerate(agg["groups"], 1):
        b.append(
            Block(
                "h3",
                f"Group {i}: {', '.join(g['papers'])} on {', '.join(g['envs'])} ({_budget(g['budget'])})",
            )
        )
        b.append(
            Block(
                "p",
                "Normalised score = (return − low) / (high − low) per env; envs: "
                + ", ".join(
                    f"{e} [{n['low']:g}, {n['high']:g}] ({n['kind']}: {n['source']})"
                    for e, n in g["normalization"].items()
                )
                + ".",
            )
        )
        b.append(
            Block(
                "table",
                header=["paper", "IQM", "mean", "median (over envs)", "optimality gap"],
                rows=[
                    [p, *(_ci(m[k], 3) for k in ("iqm", "mean", "median", "optimality_gap"))]
                    for p, m in g["metrics"].items()
                ],
            )
        )
        for name, cap in (
            ("aggregate", "Aggregate metrics with 95% CIs"),
            ("sample_efficiency", "IQM normalised return against frames (sample efficiency)"),
            ("profiles", "Performance profiles (score distributions) with 95% bands"),
        ):
            if f"{name}_{i}" in figures:
                b.append(Block("figure", f"Group {i}: {cap}", figure=f"{name}_{i}"))
        for p, c in g.get("sample_efficiency", {}).items():
            b.append(Block("p", f"Sample efficiency, {p}: {c['note']}."))
        b += [Block("p", n) for n in g["notes"]]
    if agg["dropped"]:
        b.append(Block("p", "Left out of the normalised aggregates, per (paper, env, budget):"))
        b.append(
            Block(
                "table",
                header=["paper", "env", "budget", "reason"],
                rows=[[d["paper"], d["env"], _budget(d["budget"]), d["reason"]] for d in agg["dropped"]],
            )
        )
    if agg["probability_of_improvement"]:
        b.append(Block("h3", "Probability of improvement"))
        b.append(
            Block(
                "p",
                "Per env, the probability that a run of X beats a run of Y (Mann-Whitney U / nm, "
                "ties 1/2), averaged over the envs both papers ran, among runs of the same budget.",
            )
        )
        b.append(
            Block(
                "table",
                header=["comparison", "budget", "P(X > Y) [95% CI]", "envs"],
                rows=[
                    [f"P({r['x']} > {r['y']})", _budget(r["budget"]), _ci(r, 3), ", ".join(r["envs"])]
                    for r in agg["probability_of_improvement"]
                ],
            )
        )
        if "probability_of_improvement" in figures:
            b.append(Block("figure", "Probability of improvement", figure="probability_of_improvement"))
    return b


# ---------------------------------------------------------------------------------------- renderers
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(bs: list[Block], figures: dict[str, Path], out: Path) -> str:
    lines: list[str] = []
    for blk in bs:
        if blk.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(blk.kind[1]) + " " + blk.text, ""]
        elif blk.kind == "p":
            lines += [blk.text, ""]
        elif blk.kind == "table":
            lines.append("| " + " | ".join(map(_md_cell, blk.header)) + " |")
            lines.append("|" + "---|" * len(blk.header))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in blk.rows]
            lines.append("")
        elif blk.kind == "figure":
            lines += [f"![{blk.text}]({figures[blk.figure].relative_to(out).as_posix()})", ""]
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3} figure{margin:1em 0} img{max-width:100%} figcaption{font-size:13px;color:#555}
code{background:#f5f5f5;padding:0 3px}
"""


def html_page(bs: list[Block], figures: dict[str, Path]) -> str:
    """A single HTML file: every figure inlined as a base64 PNG, no external resource."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlrepro report</title>",
        f"<style>{CSS}</style></head><body>",
    ]
    for blk in bs:
        if blk.kind in ("h1", "h2", "h3"):
            parts.append(f"<{blk.kind}>{e(blk.text)}</{blk.kind}>")
        elif blk.kind == "p":
            parts.append("<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", e(blk.text)) + "</p>")
        elif blk.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in blk.header)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in blk.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif blk.kind == "figure":
            parts.append(
                f"<figure><img alt='{e(blk.text)}' src='{data_uri(figures[blk.figure])}'>"
                f"<figcaption>{e(blk.text)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
