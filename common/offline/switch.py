"""The offline-to-online switch in numbers, written the same way by every fine-tuning loop (the shared offline
loop with `paper.train.online_steps`, Uni-O4), so that a report can compare methods at their switch.

The state lives in the loop's checkpointed counters (`c["switch"]`), so a resumed run writes the same file.
`switch.json` in the run directory, written when the run finishes:

- `offline_score`: the normalised score of the offline result (the last offline evaluation);
- `start_score`: the score of the policy the online phase starts from (the same policy, except where a method
  picks one at the switch, as Uni-O4's hand-over does);
- `window`: the scores of the online evaluations in the first `window_env_steps` env steps;
- `dip` = `start_score` − min(`window`): how far the policy falls right after the switch (≤ 0: no fall);
- `final_score` and `gain` = `final_score` − `offline_score`: what fine-tuning bought.

    python -m common.offline.switch --group Uni-O4=RUN,RUN --group "IQL fine-tuned"=RUN,RUN --out fig.png

plots each group's scores against env steps after the switch (mean and range over its runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError
from common.logger import read_metrics
from common.runtime import write_json

SWITCH_FILE = "switch.json"


def new_state() -> dict[str, Any]:
    return {"offline_score": None, "start_score": None, "window": []}


def note_online(state: dict[str, Any], env_steps: int, score: float, window: int) -> None:
    """An online evaluation `env_steps` after the switch: kept when it falls inside the window."""
    if 0 < env_steps <= window:
        state["window"].append(float(score))


def summary(state: dict[str, Any], final_score: float, window: int) -> dict[str, Any]:
    start, offline, scores = state["start_score"], state["offline_score"], list(state["window"])
    low = min(scores) if scores else None
    return {
        "offline_score": offline,
        "start_score": start,
        "window_env_steps": int(window),
        "window": scores,
        "window_min": low,
        "dip": None if low is None or start is None else float(start) - low,
        "final_score": float(final_score),
        "gain": None if offline is None else float(final_score) - float(offline),
    }


def write(run_dir: Path, state: dict[str, Any], final_score: float, window: int) -> dict[str, Any]:
    out = summary(state, final_score, window)
    write_json(Path(run_dir) / SWITCH_FILE, out)
    return out


# ------------------------------------------------------------------------------------------------ figure
def curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env steps after the switch, normalised score) of one run's evaluations from the policy the online
    phase starts from (the last offline row: Uni-O4's hand-over, IQL's final offline evaluation) on."""
    rows = read_metrics(Path(run_dir) / "eval.jsonl")
    online = [r for r in rows if r.get("online") == 1.0]
    start = [r for r in rows if r.get("online") == 0.0][-1:]
    if not online or not start:
        raise ConfigError(f"{run_dir} has no online evaluations (was it run with an online phase?)")
    picked = start + online
    return np.array([r["env_steps"] for r in picked], float), np.array(
        [r["normalized_score"] for r in picked]
    )


def plot(groups: dict[str, list[Path]], out: Path, window: int | None = None) -> None:
    """Each group's mean normalised score (and the range over its runs) against env steps after the switch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, dirs in groups.items():
        curves = [curve(d) for d in dirs]
        x = curves[0][0]
        if any(not np.array_equal(c[0], x) for c in curves):
            raise ConfigError(
                f"the runs of {label!r} were evaluated at different env steps; compare like runs"
            )
        ys = np.stack([c[1] for c in curves])
        ax.plot(x, ys.mean(0), marker="o", ms=3, label=f"{label} (n={len(dirs)})")
        ax.fill_between(x, ys.min(0), ys.max(0), alpha=0.2)
    if window:
        ax.axvspan(0, window, color="grey", alpha=0.08, lw=0)
    ax.set_xlabel("env steps after the switch (0: the policy handed over)")
    ax.set_ylabel("normalised score")
    ax.set_title("offline-to-online switch: mean and range over seeds")
    ax.legend()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m common.offline.switch",
        description="plot scores around the offline-to-online switch: --group LABEL=DIR[,DIR...] per method",
    )
    ap.add_argument("--group", action="append", required=True, metavar="LABEL=DIR[,DIR...]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--window", type=int, default=None, help="shade the first WINDOW env steps")
    args = ap.parse_args(argv)
    groups: dict[str, list[Path]] = {}
    for g in args.group:
        label, sep, dirs = g.partition("=")
        if not sep or not dirs:
            print(f"error: --group {g!r} must be LABEL=DIR[,DIR...]", file=sys.stderr)
            return 2
        groups[label] = [Path(d) for d in dirs.split(",")]
    try:
        plot(groups, args.out, args.window)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
