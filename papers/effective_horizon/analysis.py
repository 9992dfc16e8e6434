"""The paper's headline analysis: deep RL's sample complexity read from run directories, and its rank
correlation with SQIRL's and with the stochastic effective horizon across environments (Sec. 4: Spearman
correlations between the sample complexities of SQIRL, PPO and DQN and the bounds, on the sticky-action envs).

CLI (from the repo root):

    python -m papers.effective_horizon.analysis steps PPO_RUN_DIR --threshold 0.95
    python -m papers.effective_horizon.analysis steps PPO_RUN_DIR --env-run EFFECTIVE_HORIZON_RUN_DIR
    python -m papers.effective_horizon.analysis table --analysis DIR --ppo DIR --dqn DIR --out TABLE.json
    python -m papers.effective_horizon.analysis correlate TABLE.json

`steps` prints the first env frame at which a PPO/DQN run's evaluation return reached the threshold (given,
or the `threshold` in a `paper=effective_horizon` run's results.json), or inf. `correlate` reads
{env: {"bound": H̄, "sqirl": n, "ppo": n, "dqn": n}} (null entries are skipped pairwise; inf or "inf" means
never solved and ranks last) and prints Spearman's ρ and the number of envs for each pair. `table` writes that
table from the run directories under each folder (a multirun's sweep dir): per env, the bound A^H̄ of a
`paper=effective_horizon` run (A^H̄ = A^k / Δ_k², the factor SQIRL's sample complexity grows with), its SQIRL
sample complexity, and PPO's and DQN's: the median over seeds of each run's first solved frame at that env's
threshold (the paper's median over seeds; inf when the median run never solved it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import spearmanr

from common.errors import ConfigError
from common.logger import read_metrics

COLUMNS = ("bound", "sqirl", "ppo", "dqn")


def first_solved_frame(run_dir: Path | str, threshold: float) -> float:
    """The first `frame` of `eval.jsonl` in `run_dir` whose `episode_return` is at least `threshold` (inf:
    never). The authors stop training once the evaluation return reaches the threshold (sb3 train.py
    @1a83eb7 `stop_on_eval_reward`); `stop_at_return` does the same here (effective_horizon_* experiments),
    and a run trained past it still reads its first solved frame."""
    path = Path(run_dir) / "eval.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: pass a run directory of paper=ppo or paper=dqn")
    for row in sorted(read_metrics(path), key=lambda r: r["frame"]):
        value = row.get("episode_return")
        if value is not None and math.isfinite(value) and value >= threshold:
            return float(row["frame"])
    return math.inf


def spearman_table(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float | int]]:
    """Spearman's ρ (and the number of envs) for each pair of COLUMNS that two or more envs have both of.
    Ties (e.g. several unsolved envs, all inf) get their average rank, as scipy does."""
    out: dict[str, dict[str, float | int]] = {}
    for a, b in itertools.combinations(COLUMNS, 2):
        pairs = [
            (row[a], row[b]) for row in table.values() if row.get(a) is not None and row.get(b) is not None
        ]
        if len(pairs) < 2:
            continue
        x, y = zip(*pairs, strict=True)
        rho = spearmanr(x, y).statistic  # inf is ordered above every finite value
        out[f"{a}~{b}"] = {"rho": float(rho), "envs": len(pairs)}
    return out


def _run_dirs(root: Path, marker: str) -> list[Path]:
    """Run directories under `root` (itself, or any depth below) that hold `marker` and a config.yaml."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory; pass the sweep dir of the runs")
    found = sorted(p.parent for p in root.rglob(marker) if (p.parent / "config.yaml").is_file())
    if not found:
        raise ConfigError(f"{root} holds no run directory with {marker}; run the page's commands first")
    return found


def _env_name(run_dir: Path) -> str:
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    return str(cfg["env"]["name"])


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def build_table(analysis: Path, deep: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """{env: bound, sqirl, the deep columns, and what they came from} over the envs of the analysis runs."""
    table: dict[str, dict[str, Any]] = {}
    for run in _run_dirs(analysis, "results.json"):
        res = json.loads((run / "results.json").read_text())
        eh = res["analysis"]
        h = float(eh["effective_horizon"])
        table[_env_name(run)] = {
            "bound": _json_number(float(eh["num_actions"]) ** h if math.isfinite(h) else math.inf),
            "sqirl": _json_number(float(res["sqirl_sample_complexity"])),
            "effective_horizon": _json_number(h),
            "min_k": eh["min_k"],
            "num_actions": eh["num_actions"],
            "threshold": float(res["threshold"]),
        }
    for column, root in deep.items():
        per_env: dict[str, list[float]] = {}
        for run in _run_dirs(root, "eval.jsonl"):
            env = _env_name(run)
            if env in table:
                per_env.setdefault(env, []).append(first_solved_frame(run, table[env]["threshold"]))
        for env, row in table.items():
            frames = sorted(per_env.get(env, []))
            row[column] = _json_number(statistics.median(frames)) if frames else None
            row[f"{column}_runs"] = [_json_number(f) for f in frames]
    return table


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"a table entry must be a number, inf or null, got {value!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m papers.effective_horizon.analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    steps = sub.add_parser("steps", help="first eval frame of a PPO/DQN run that reaches the optimal return")
    steps.add_argument("run_dir", type=Path)
    given = steps.add_mutually_exclusive_group(required=True)
    given.add_argument("--threshold", type=float, help="the return that counts as solved")
    given.add_argument("--env-run", type=Path, help="a paper=effective_horizon run dir: its threshold")
    tab = sub.add_parser("table", help="the per-env table of bound, SQIRL, PPO and DQN from run directories")
    tab.add_argument("--analysis", type=Path, required=True, help="paper=effective_horizon runs (sweep dir)")
    tab.add_argument("--ppo", type=Path, help="experiment=effective_horizon_ppo runs (sweep dir)")
    tab.add_argument("--dqn", type=Path, help="experiment=effective_horizon_dqn runs (sweep dir)")
    tab.add_argument("--out", type=Path, required=True, help="the table's JSON file")
    corr = sub.add_parser("correlate", help="Spearman's rho between bound, SQIRL, PPO and DQN over envs")
    corr.add_argument("table", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "steps":
            threshold = args.threshold
            if threshold is None:
                path = args.env_run / "results.json"
                if not path.is_file():
                    raise ConfigError(f"{path} does not exist: pass a paper=effective_horizon run directory")
                threshold = float(json.loads(path.read_text())["threshold"])
            print(first_solved_frame(args.run_dir, threshold))
        elif args.command == "table":
            deep = {name: path for name, path in (("ppo", args.ppo), ("dqn", args.dqn)) if path is not None}
            table = build_table(args.analysis, deep)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(table, indent=1, allow_nan=False) + "\n")
            print(f"{args.out}: {len(table)} envs")
        else:
            raw = json.loads(args.table.read_text())
            table = {env: {c: _number(row.get(c)) for c in COLUMNS} for env, row in raw.items()}
            print(json.dumps(spearman_table(table), indent=2))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
