"""Run logging: JSONL metrics files (the source of truth), an optional W&B mirror, and a progress bar."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

    def state_dict(self) -> dict[str, dict[str, float | int]]:
        """The sums and counts not yet popped (a checkpoint keeps them, so the next row averages the same
        updates whether or not the run was resumed in between)."""
        return {"sum": dict(self._sum), "n": dict(self._n)}

    def load_state_dict(self, state: dict[str, dict[str, float | int]]) -> None:
        self._sum.clear()
        self._n.clear()
        self._sum.update({k: float(v) for k, v in state["sum"].items()})
        self._n.update({k: int(v) for k, v in state["n"].items()})


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


# Online W&B without a network must not stall a run: a TCP probe of the server first (a refused or
# unroutable address answers at once or within this), and a short wait for the init handshake after it
PROBE_TIMEOUT_S = 3.0
INIT_TIMEOUT_S = 30.0


def wandb_unreachable(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the W&B server cannot be reached (None when it accepts a connection, or behind a proxy,
    which only the init handshake can tell)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    if os.environ.get("WANDB_BASE_URL"):
        base = os.environ["WANDB_BASE_URL"]
    else:
        import wandb

        base = str(wandb.Settings().base_url)
    url = urlsplit(base)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as e:
        return f"{base} unreachable ({e.strerror or e or type(e).__name__})"


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
            self._wandb = _wandb_init(cfg, run_dir, wandb_id, mode)
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


def _wandb_init(cfg: DictConfig, run_dir: Path, wandb_id: str, mode: str) -> Any:
    """`wandb.init` for a run; online without a reachable server falls back to offline with one line
    (`wandb sync` uploads the offline run later)."""
    import wandb  # heavy: imported only when mirroring

    def init(mode: str) -> Any:
        return wandb.init(
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
            settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S),
        )

    why = wandb_unreachable() if mode == "online" else None
    if why is None:
        try:
            return init(mode)
        except Exception as e:  # wandb raises its own CommError/UsageError/TimeoutError types here
            if mode != "online":
                raise
            why = f"init failed ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
    print(
        f"wandb: {why}; logging offline in {run_dir}/wandb (upload later with `wandb sync`)",
        file=sys.stderr,
    )
    return init("offline")
