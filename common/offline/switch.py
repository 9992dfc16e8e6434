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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
