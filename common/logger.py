"""Run logging: JSONL metrics files (the source of truth), an optional W&B mirror, and a progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

# wall-clock fields: the only ones that differ between identical runs
TIME_KEYS = ("time", "fps", "updates_per_s")


class MetricsFile:
    """An append-only JSONL file of metric rows whose length a checkpoint records and a resume restores."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = sum(1 for _ in path.open()) if path.exists() else 0

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        self.rows += 1

    def truncate(self, rows: int) -> None:
        """Drop rows written after a checkpoint (they will be written again)."""
        lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(lines[:rows]))
        os.replace(tmp, self.path)
        self.rows = min(rows, len(lines))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics JSONL file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Averager:
    """Running means of update metrics between two logged rows."""

    def __init__(self) -> None:
        self._sum: dict[str, float] = defaultdict(float)
        self._n: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._sum[k] += float(v)
            self._n[k] += 1

    def pop(self) -> dict[str, float]:
        out = {k: self._sum[k] / self._n[k] for k in self._sum}
        self._sum.clear()
        self._n.clear()
        return out


def wandb_mode(requested: str) -> str:
    """`auto` becomes online when an API key is configured and offline otherwise; WANDB_MODE always wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if requested != "auto":
        return requested
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.exists() and "api.wandb.ai" in netrc.read_text()
    )
    return "online" if has_key else "offline"


class RunLogger:
    """Writes `train.jsonl` and `eval.jsonl` in the run directory and mirrors every row to W&B."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        wandb_id: str,
        total_frames: int,
        start_frame: int,
        unit: str = "frame",
    ) -> None:
        self.train = MetricsFile(run_dir / "train.jsonl")
        self.eval = MetricsFile(run_dir / "eval.jsonl")
        self._wandb = None
        mode = wandb_mode(cfg.logger.wandb.mode) if cfg.logger.wandb.enabled else "disabled"
        if mode != "disabled":
            import wandb  # heavy: imported only when mirroring

            self._wandb = wandb.init(
                project=cfg.logger.wandb.project,
                entity=cfg.logger.wandb.entity,
                group=cfg.logger.wandb.group,
                name=run_dir.name,
                id=wandb_id,
                resume="allow",
                dir=str(run_dir),
                mode=mode,  # type: ignore[arg-type]
                tags=[t for t in (cfg.paper.name, cfg.env.name, cfg.tag) if t],
                config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            )
        self.bar = tqdm(
            total=total_frames,
            initial=start_frame,
            unit=unit,
            unit_scale=True,
            dynamic_ncols=True,
            disable=not cfg.logger.progress,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            desc=f"{cfg.paper.name}/{cfg.env.name}",
        )
        self._postfix: dict[str, str] = {}

    def log(self, kind: str, row: dict[str, Any]) -> None:
        """Append a row to `<kind>.jsonl` ("train" or "eval") and mirror it."""
        getattr(self, kind).write(row)
        if self._wandb is not None:
            finite = {
                f"{kind}/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and math.isfinite(v)
            }
            self._wandb.log(finite, step=int(row["frame"]))
        if kind == "eval":
            self._postfix["eval"] = f"{row['episode_return']:.1f}"
            if "normalized_score" in row:  # offline runs: the D4RL score next to the raw return
                self._postfix["score"] = f"{row['normalized_score']:.1f}"
        elif "episode_return" in row:
            self._postfix["ep"] = f"{row['episode_return']:.1f}"
        self.bar.set_postfix(self._postfix, refresh=False)

    def status(self, text: str | None) -> None:
        """Show what the run is doing besides stepping (e.g. a long evaluation) on the progress bar."""
        if text is None:
            self._postfix.pop("now", None)
        else:
            self._postfix["now"] = text
        self.bar.set_postfix(self._postfix, refresh=True)

    def positions(self) -> dict[str, int]:
        return {"train": self.train.rows, "eval": self.eval.rows}

    def restore(self, positions: dict[str, int]) -> None:
        self.train.truncate(int(positions["train"]))
        self.eval.truncate(int(positions["eval"]))

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self.bar.close()
        if self._wandb is not None:
            if summary:
                self._wandb.summary.update(summary)
            self._wandb.finish()
