"""Report figures drawn from `results.json` content (matplotlib, Agg): PNG files and their base64 text."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100


def _arr(values: list[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _colors(papers: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {p: cmap(i % 10) for i, p in enumerate(papers)}


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata keeps PNG bytes identical between builds of the same results.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _band(ax: Any, band: dict[str, Any], color: Any, label: str, scale: float = 1.0) -> None:
    x = _arr(band["x"]) / scale
    mean, lo, hi = _arr(band["mean"]), _arr(band["lower"]), _arr(band["upper"])
    marker = "." if x.size < 30 else None
    if "n" in band:  # solid where every run has data, dotted where only some do (partial runs)
        n = _arr(band["n"])
        full = n == np.nanmax(n)
        ax.plot(x, np.where(full, mean, np.nan), color=color, label=label, marker=marker)
        if np.any((n > 0) & ~full):  # all of the mean dotted underneath: the partial stretch joins the solid
            ax.plot(x, mean, color=color, ls=":", label=f"{label}: fewer runs")
    else:
        ax.plot(x, mean, color=color, label=label, marker=marker)
    ax.fill_between(x, lo, hi, color=color, alpha=0.25, linewidth=0)


def paper_marker(row: dict[str, Any]) -> tuple[float, float, Any, str] | None:
    """The star for a paper's number: (frames, mean, yerr, legend label). The error bar is the paper mean's
    95% CI (asymmetric for a bootstrap CI), or absent when the paper reports no spread; the label says so."""
    ref = row.get("paper_ref")
    if not ref or ref.get("mean") is None:
        return None
    mean, iv = float(ref["mean"]), row.get("paper_interval")
    yerr = [[mean - iv["lower"]], [iv["upper"] - mean]] if iv else None
    label = f"{row['paper']}: " + (row.get("paper_label") or "paper mean, spread not reported")
    return float(ref["frames"]), mean, yerr, label


def env_curves(
    env: str, data: dict[str, Any], table: list[dict[str, Any]], colors: dict[str, Any], path: Path
) -> None:
    """Mean eval return with 95 % bootstrap bands against frames and wall-clock; paper numbers marked."""
    fig, (ax_f, ax_t) = plt.subplots(1, 2, figsize=(10, 3.6))
    for paper, band in data["frames"].items():
        partial = band.get("partial_runs") or []
        label = paper + (f" (partial seeds {partial})" if partial else "")
        _band(ax_f, band, colors[paper], label)
    for paper, band in data["time"].items():
        _band(ax_t, band, colors[paper], paper, scale=60.0)
    for row in table:
        marker = paper_marker(row)
        if marker is not None:
            x, y, yerr, label = marker
            ax_f.errorbar(
                [x], [y], yerr=yerr, fmt="*", ms=10, capsize=3, color=colors[row["paper"]], label=label
            )
    ax_f.set_xlabel("frames")
    ax_t.set_xlabel("wall-clock (minutes)")
    for ax in (ax_f, ax_t):
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    ax_f.legend(fontsize=8)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"{env}: mean over seeds, 95% bootstrap CI")
    _save(fig, path)


def aggregate_intervals(agg: dict[str, Any], colors: dict[str, Any], path: Path) -> None:
    metrics = ("iqm", "mean", "median", "optimality_gap")
    papers = list(agg["metrics"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 0.6 * len(papers) + 1.4))
    for ax, m in zip(axes, metrics, strict=True):
        for i, p in enumerate(papers):
            iv = agg["metrics"][p][m]
            ax.barh(i, iv["upper"] - iv["lower"], left=iv["lower"], height=0.6, color=colors[p], alpha=0.6)
            ax.plot([iv["point"]] * 2, [i - 0.3, i + 0.3], color="k")
        ax.set_yticks(range(len(papers)), papers if m == "iqm" else [""] * len(papers))
        ax.set_title(
            m.replace("_", " ") + (" (lower is better)" if m == "optimality_gap" else ""), fontsize=9
        )
        ax.set_xlabel("normalised score")
        ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def sample_efficiency(agg: dict[str, Any], colors: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for p, curve in agg["sample_efficiency"].items():
        if "x" in curve:
            _band(
                ax,
                {"x": curve["x"], "mean": curve["point"], "lower": curve["lower"], "upper": curve["upper"]},
                colors[p],
                p,
            )
    ax.set_xlabel("frames")
    ax.set_ylabel("IQM normalised return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def profiles(agg: dict[str, Any], colors: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    taus = _arr(agg["profiles"]["taus"])
    for p in agg["metrics"]:
        prof = agg["profiles"][p]
        _band(
            ax,
            {"x": taus, "mean": prof["point"], "lower": prof["lower"], "upper": prof["upper"]},
            colors[p],
            p,
        )
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def probability_of_improvement(agg: dict[str, Any], path: Path) -> None:
    rows = agg["probability_of_improvement"]
    fig, ax = plt.subplots(figsize=(5, 0.5 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        ax.barh(i, r["upper"] - r["lower"], left=r["lower"], height=0.6, color="tab:blue", alpha=0.5)
        ax.plot([r["point"]] * 2, [i - 0.3, i + 0.3], color="k")
    ax.axvline(0.5, color="gray", ls="--")
    several = len({r["budget"] for r in rows}) > 1
    ax.set_yticks(
        range(len(rows)),
        [f"P({r['x']} > {r['y']})" + (f" @ {r['budget'] or '?'}" if several else "") for r in rows],
    )
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of improvement")
    _save(fig, path)


def draw_all(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """Every figure of the report under `out/figures/`; returns name -> path (`<name>_<i>` per group i)."""
    papers = sorted({row["paper"] for e in results["envs"].values() for row in e["table"]})
    colors = _colors(papers)
    figs: dict[str, Path] = {}
    for env, data in results["envs"].items():
        if data["curves"]["frames"]:
            figs[f"curves_{env}"] = out / "figures" / f"curves_{env}.png"
            env_curves(env, data["curves"], data["table"], colors, figs[f"curves_{env}"])
    agg = results["aggregate"]
    for i, group in enumerate(agg["groups"], 1):
        figs[f"aggregate_{i}"] = out / "figures" / f"aggregate_{i}.png"
        aggregate_intervals(group, colors, figs[f"aggregate_{i}"])
        figs[f"profiles_{i}"] = out / "figures" / f"profiles_{i}.png"
        profiles(group, colors, figs[f"profiles_{i}"])
        if any("x" in c for c in group["sample_efficiency"].values()):
            figs[f"sample_efficiency_{i}"] = out / "figures" / f"sample_efficiency_{i}.png"
            sample_efficiency(group, colors, figs[f"sample_efficiency_{i}"])
    if agg["probability_of_improvement"]:
        figs["probability_of_improvement"] = out / "figures" / "probability_of_improvement.png"
        probability_of_improvement(agg, figs["probability_of_improvement"])
    return figs


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
