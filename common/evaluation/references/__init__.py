"""Published scores per paper and env, and normalisation bounds per env.

A paper's reported numbers live with the paper, in `papers/<paper>/references.yaml` (the folder names the
paper); each maps an env name to a list of entries:

- `frames`: the env frames at which the number holds;
- `runs`: the per-seed values when the source publishes them (mean and sd are computed here), or `mean`
  with `sd` and `seeds` when only a summary exists;
- `source`: the paper's table or figure, or the official results file with its commit; a number that could
  not be checked says "(unverified)";
- or only `unavailable:`, naming where the number lives when it has not been read or digitised yet (no
  number is ever typed in from memory).

`envs.yaml` here holds the bounds that normalise returns across envs, shared by every paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import ConfigError
from common.registry import ROOT

HERE = Path(__file__).resolve().parent
PAPERS_DIR = ROOT / "papers"  # installed or not, `papers` sits next to `common`
PAPER_FILE = "references.yaml"

# A paper number counts as "at our budget" when its frame count is within this fraction of ours.
FRAMES_TOLERANCE = 0.02


@dataclass(frozen=True)
class PaperScore:
    """One reported number: mean (and spread) at `frames`, or `unavailable` naming where it would be."""

    paper: str
    env: str
    frames: int | None
    mean: float | None
    sd: float | None
    seeds: int | None
    runs: tuple[float, ...]
    source: str
    unavailable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": self.paper,
            "env": self.env,
            "frames": self.frames,
            "mean": self.mean,
            "sd": self.sd,
            "seeds": self.seeds,
            "runs": list(self.runs),
            "source": self.source,
            "unavailable": self.unavailable,
        }


@dataclass(frozen=True)
class PaperInterval:
    """A confidence interval of a paper's mean, and how it was made."""

    lower: float
    upper: float
    confidence: float
    seeds: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "confidence": self.confidence,
            "seeds": self.seeds,
            "method": self.method,
        }


def paper_interval(
    score: PaperScore, confidence: float = 0.95, *, reps: int = 50_000, seed: int = 0
) -> PaperInterval | None:
    """The paper mean's confidence interval: a percentile bootstrap of the mean over its per-seed `runs`
    when given (>= 2), else mean ± t_{(1+c)/2, n-1} sd / sqrt(n) from its `sd` and `seeds` (n >= 2), else
    None (spread not reported)."""
    from common.evaluation.stats import bootstrap_ci

    if score.mean is None:
        return None
    if len(score.runs) >= 2:
        iv = bootstrap_ci(
            np.asarray(score.runs)[:, None], "mean", reps=reps, confidence=confidence, seed=seed
        )
        n = len(score.runs)
        method = f"percentile bootstrap of the mean over the paper's {n} per-seed scores"
        return PaperInterval(float(iv.lower), float(iv.upper), confidence, n, method)
    if score.sd is not None and score.seeds is not None and score.seeds >= 2:
        from scipy.stats import t  # scipy comes with dm-control (a dependency)

        n = score.seeds
        half = float(t.ppf((1.0 + confidence) / 2.0, n - 1)) * score.sd / float(np.sqrt(n))
        method = f"mean ± t(n-1) sd/sqrt(n) from the paper's sd over {n} seeds"
        return PaperInterval(score.mean - half, score.mean + half, confidence, n, method)
    return None


@dataclass(frozen=True)
class Bounds:
    """Normalisation bounds of an env: normalised = (score - low) / (high - low)."""

    low: float
    high: float
    source: str
    kind: str = "reference"

    def normalize(self, scores: np.ndarray | float) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.low) / (self.high - self.low)


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return data


def _paper_score(paper: str, env: str, entry: dict[str, Any], where: str) -> PaperScore:
    if "unavailable" in entry:
        return PaperScore(paper, env, entry.get("frames"), None, None, None, (), entry["unavailable"], True)
    if "source" not in entry or "frames" not in entry:
        raise ConfigError(f"{where}: each entry needs `frames` and `source` (or `unavailable`)")
    runs = tuple(float(x) for x in entry.get("runs", ()))
    if runs:
        mean = float(np.mean(runs))
        sd: float | None = float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0
        seeds: int | None = len(runs)
    elif "mean" in entry:
        mean = float(entry["mean"])
        sd = None if entry.get("sd") is None else float(entry["sd"])
        seeds = None if entry.get("seeds") is None else int(entry["seeds"])
    else:
        raise ConfigError(f"{where}: give `runs` (per-seed values) or `mean`")
    return PaperScore(paper, env, int(entry["frames"]), mean, sd, seeds, runs, str(entry["source"]))


def paper_file(paper: str) -> str:
    """Where a paper's reported numbers live, relative to the repository root."""
    return f"papers/{paper}/{PAPER_FILE}"


@cache
def paper_scores() -> dict[tuple[str, str], tuple[PaperScore, ...]]:
    """Every entry of every papers/<paper>/references.yaml keyed by (paper, env), ordered by frames."""
    out: dict[tuple[str, str], tuple[PaperScore, ...]] = {}
    for path in sorted(PAPERS_DIR.glob(f"*/{PAPER_FILE}")):
        paper = path.parent.name
        for env, entries in _load_yaml(path).items():
            where = f"{paper_file(paper)} {env}"
            if not isinstance(entries, list):
                raise ConfigError(f"{where}: expected a list of entries")
            scores = [_paper_score(paper, str(env), e, where) for e in entries]
            out[(paper, str(env))] = tuple(sorted(scores, key=lambda s: s.frames or 0))
    return out


@cache
def env_bounds() -> dict[str, Bounds]:
    """Normalisation bounds per env name from envs.yaml."""
    table = _load_yaml(HERE / "envs.yaml").get("envs", {})
    return {
        env: Bounds(float(b["low"]), float(b["high"]), str(b["source"]), str(b.get("kind", "reference")))
        for env, b in table.items()
    }


def bounds_for(env: str) -> Bounds | None:
    """The env's normalisation bounds, or None when no source-backed bounds are recorded."""
    return env_bounds().get(env)


def reference_for(paper: str, env: str, frames: int | None) -> tuple[PaperScore | None, str]:
    """The paper's number at our budget `frames`, and a note explaining a missing or mismatched one.

    Returns (score, "") on a match within FRAMES_TOLERANCE; (None, why) otherwise.
    """
    entries = paper_scores().get((paper, env), ())
    if not entries:
        return None, f"no {paper} number for {env} in {paper_file(paper)}"
    usable = [e for e in entries if not e.unavailable]
    if not usable:
        return None, f"not available: {entries[0].source}"
    if frames is not None:
        for e in usable:
            assert e.frames is not None
            if abs(e.frames - frames) <= FRAMES_TOLERANCE * e.frames:
                return e, ""
    budgets = ", ".join(f"{e.frames:,}" for e in usable)
    ours = "unknown" if frames is None else f"{frames:,}"
    return None, f"paper reports {env} at {budgets} frames; ours ends at {ours}: budgets differ"
