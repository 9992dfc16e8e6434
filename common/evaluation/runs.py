"""Run directories (made by `run.py`) read into score arrays: final scores, curves, and their alignment.

A run directory holds `config.yaml`, `run.json`, `status.json`, `eval.jsonl` and `train.jsonl`
(see `common.launch` and `common.logger`). Nothing here writes to a run directory.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import ConfigError
from common.evaluation.references import Bounds, bounds_for

# status.json states (docs/faults.md); "interrupted": "running" on disk but no process holds the run's lock
STATES = ("finished", "preempted", "running", "interrupted", "diverged", "pruned", "failed", "unknown")
#: The debug preset whose runs are smoke tests (numbers that mean nothing), and its values.
SMOKE_OVERRIDE = "debug=smoke"
SMOKE_PRESET = Path(__file__).resolve().parents[2] / "conf" / "debug" / "smoke.yaml"


@dataclass
class Run:
    """One run directory: identity, state, evaluation curve and provenance."""

    path: Path
    paper: str
    env: str
    seed: int
    tag: str
    state: str
    score: float | None  # status.json's final score (the last evaluation's mean return)
    budget: int | None  # paper.train.num_frames: the frames the run was asked for
    frames: np.ndarray  # evaluation frames, ascending
    returns: np.ndarray  # mean evaluation return at each frame
    times: np.ndarray  # wall-clock seconds since the run started, at each evaluation
    info: dict[str, Any]  # run.json
    overrides: list[str]
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    dataset_bounds: Bounds | None = None
    config_hash: str = ""  # run.json's config_hash (else config.yaml's hash): with seed, the identity
    smoke: bool = False  # a debug=smoke run (overrides, or every smoke preset value in its config)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)  # other paths of this run, dropped
    dataset: str | None = None  # offline runs: the D4RL split they trained on

    @property
    def arm(self) -> str:
        """What a report compares: the paper, and its tag when set (`stream_ac[barrier_sgd]`): a tag names
        a variant of a paper, so runs with different tags are never pooled."""
        return f"{self.paper}[{self.tag}]" if self.tag else self.paper

    @property
    def task(self) -> str:
        """Where a report compares: the env, and the dataset of an offline run (`hopper/medium`)."""
        return f"{self.env}/{self.dataset}" if self.dataset else self.env

    @property
    def identity(self) -> tuple[str, str, int, str]:
        """(arm, task, seed, config hash): directories with the same identity hold the same run."""
        return (self.arm, self.task, self.seed, self.config_hash)

    @property
    def final(self) -> float | None:
        """The run's final score: status.json's score when finished, else its last evaluation (partial)."""
        if self.state == "finished" and self.score is not None:
            return self.score
        return float(self.returns[-1]) if self.returns.size else None

    @property
    def final_frame(self) -> int | None:
        return int(self.frames[-1]) if self.frames.size else None

    @property
    def complete(self) -> bool:
        """Finished with a final score (status.json is authoritative, even if eval.jsonl lost rows)."""
        return self.state == "finished" and self.score is not None

    @property
    def bounds(self) -> Bounds | None:
        """Normalisation bounds: the dataset's (offline runs) or the env's (envs.yaml), else None."""
        return self.dataset_bounds or bounds_for(self.env)


def _lock_free(run_dir: Path) -> bool:
    """Whether `run_dir/.lock` exists and no process holds it (`common.runtime.RunLock`); False when the run
    predates locks (no .lock: it cannot be told)."""
    import fcntl
    import os

    try:
        fd = os.open(run_dir / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False  # held by the writing process
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _read_eval(path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    empty = np.zeros(0)
    if not path.exists():
        notes.append("no eval.jsonl")
        return empty, empty, empty
    frames, returns, times, skipped = [], [], [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1  # a line cut by a kill mid-write
            continue
        ret = row.get("episode_return")
        if "frame" not in row or not isinstance(ret, (int, float)) or not np.isfinite(ret):
            skipped += 1
            continue
        frames.append(int(row["frame"]))
        returns.append(float(ret))
        times.append(float(row.get("time", np.nan)))
    if skipped:
        notes.append(f"{skipped} eval row(s) without a finite episode_return or frame skipped")
    if not frames:
        notes.append("no evaluation rows")
        return empty, empty, empty
    order = np.argsort(frames, kind="stable")
    return (np.asarray(frames)[order], np.asarray(returns)[order], np.asarray(times)[order])


def _dataset_bounds(info: dict[str, Any], config: dict[str, Any]) -> Bounds | None:
    """D4RL-style bounds recorded by an offline run: `ref_min_score`/`ref_max_score` in run.json's
    `dataset` mapping or in the config's `dataset` mapping (Fu et al. 2020, D4RL, Sec. 5)."""
    for where, meta in (("run.json", info.get("dataset")), ("config.yaml", config.get("dataset"))):
        if isinstance(meta, dict) and "ref_min_score" in meta and "ref_max_score" in meta:
            lo, hi = float(meta["ref_min_score"]), float(meta["ref_max_score"])
            if hi != lo:
                return Bounds(lo, hi, f"dataset ref_min_score/ref_max_score ({where})", "dataset")
    return None


def _hash_config(config: dict[str, Any]) -> str:
    """As `common.runtime.config_hash` on a saved config.yaml: sha256 of the sorted JSON minus `resume`."""
    body = {k: v for k, v in config.items() if k != "resume"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _smoke_values() -> dict[str, Any]:
    try:
        return _leaves(yaml.safe_load(SMOKE_PRESET.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return {}


def is_smoke(config: dict[str, Any], overrides: Sequence[str]) -> bool:
    """A smoke run: `debug=smoke` among its overrides, or every value of conf/debug/smoke.yaml that its
    config has (at least half of them) equal to the preset's."""
    if any(o.lstrip("+~") == SMOKE_OVERRIDE for o in overrides):
        return True
    preset, have = _smoke_values(), _leaves(config)
    shared = [k for k in preset if k in have]
    return bool(preset) and 2 * len(shared) >= len(preset) and all(have[k] == preset[k] for k in shared)


def load_run(path: Path) -> Run:
    """Read one run directory. Fails with a one-line error when `path` is not a run directory."""
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not cfg_path.exists():
        raise ConfigError(f"{path} is not a run directory (no config.yaml); pass directories made by run.py")
    try:
        config = yaml.safe_load(cfg_path.read_text()) or {}
        paper, env, seed = config["paper"]["name"], config["env"]["name"], int(config["seed"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f"{cfg_path} lacks paper.name, env.name or seed ({e}); is it a run.py config?"
        ) from e
    notes: list[str] = []
    info = _read_json(path / "run.json") or {}
    if not info:
        notes.append("no run.json (provenance unknown)")
    status = _read_json(path / "status.json")
    if status is None:
        notes.append("no status.json")
        status = {}
    state = status.get("state", "unknown")
    if state not in STATES:
        state = "unknown"
    if state == "running" and _lock_free(path):
        state = "interrupted"
        notes.append("status says running but no process holds the run (killed); resume or restart it")
    frames, returns, times = _read_eval(path / "eval.jsonl", notes)
    budget = (config.get("paper") or {}).get("train", {}).get("num_frames")
    overrides_path = path / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.exists() else None
    if overrides is None:
        overrides = info.get("overrides") or []
    overrides = [str(o) for o in overrides]
    score = status.get("score")
    return Run(
        path=path,
        paper=str(paper),
        env=str(env),
        seed=seed,
        tag=str(config.get("tag") or ""),
        state=state,
        score=float(score) if isinstance(score, (int, float)) else None,
        budget=int(budget) if isinstance(budget, int) else None,
        frames=frames,
        returns=returns,
        times=times,
        info=info,
        overrides=overrides,
        error=status.get("error"),
        notes=notes,
        dataset_bounds=_dataset_bounds(info, config),
        config_hash=str(info.get("config_hash") or _hash_config(config)),
        smoke=is_smoke(config, overrides),
        dataset=str(config["dataset"]) if isinstance(config.get("dataset"), str) else None,
    )


def _is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").exists() and (
        (path / "status.json").exists() or (path / "run.json").exists()
    )


def _walk(top: Path, ancestors: frozenset[Path] = frozenset()) -> list[Path]:
    """Run directories at or below `top`, recognised by their files, whatever the folder names: symlinked
    folders are followed (a link back to an ancestor is not), hidden folders and a run's own subfolders
    are not searched."""
    if _is_run_dir(top):
        return [top]
    real = top.resolve()
    if real in ancestors:
        return []
    try:
        children = sorted(c for c in top.iterdir() if not c.name.startswith(".") and c.is_dir())
    except OSError:
        return []
    return [d for c in children for d in _walk(c, ancestors | {real})]


def _found_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories given or found below the given paths, in order, each path once (absolute, not
    resolved: one directory reached through a symlink or a copy appears under each of its paths)."""
    given = list(paths)
    if not given:
        raise ConfigError("no run directories given; pass run directories or folders that contain them")
    found: list[Path] = []
    for p in map(Path, given):
        if not p.exists():
            raise ConfigError(f"{p} does not exist; pass run directories or folders that contain them")
        below = _walk(p.absolute())
        if not below:
            raise ConfigError(
                f"no run directories in {p} (a run directory holds config.yaml and status.json or run.json)"
            )
        found.extend(below)
    return list(dict.fromkeys(found))


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories given directly or found at any depth below the given directories (multirun outputs
    included; symlinked folders followed, hidden folders skipped), resolved and each once."""
    return list(dict.fromkeys(d.resolve() for d in _found_run_dirs(paths)))


def _preference(run: Run) -> tuple[bool, bool, int, int]:
    """Sort key of copies of one run: finished with a score first, then the furthest evaluated."""
    return (not run.complete, run.state != "finished", -(run.final_frame or -1), -run.frames.size)


def deduplicate(runs: Sequence[Run]) -> list[Run]:
    """One run per identity (paper, env, seed, config hash), preferring a finished one (then the furthest,
    then the first given); the kept run lists the dropped copies' paths in `duplicates`."""
    same: dict[tuple[str, str, int, str], list[Run]] = defaultdict(list)
    for r in runs:
        same[r.identity].append(r)
    kept = []
    for copies in same.values():
        best, *others = sorted(copies, key=_preference)  # stable: ties keep the order given
        for o in others:
            why = f"a copy of the same run ({o.state}; same paper, env, seed and config hash {o.config_hash})"
            best.duplicates += [(o.path, why), *o.duplicates]
        kept.append(best)
    return kept


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run directory given or found below the given paths, sorted by (env, paper, seed, path).

    A run reached through several paths (the same folder twice, a symlink, a copy) is counted once: see
    `deduplicate`; the paths dropped are in the kept run's `duplicates`.
    """
    by_real: dict[Path, list[Path]] = defaultdict(list)
    for p in _found_run_dirs(paths):
        by_real[p.resolve()].append(p)
    runs = []
    for real, seen_as in by_real.items():
        run = load_run(real)
        run.duplicates = [(p, "the same directory through another path") for p in seen_as[1:]]
        runs.append(run)
    return sorted(deduplicate(runs), key=lambda r: (r.env, r.paper, r.seed, str(r.path)))


def group_runs(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """Runs grouped by task (env, or env/dataset), then by arm (paper, or paper[tag]), both sorted."""
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        out[r.task][r.arm].append(r)
    return {env: {p: out[env][p] for p in sorted(out[env])} for env in sorted(out)}


def single_env(runs: Sequence[Run]) -> str:
    """The env shared by all runs; a one-line error when they mix envs or there are none."""
    envs = sorted({r.env for r in runs})
    if not envs:
        raise ConfigError("no runs selected; check the paths")
    if len(envs) > 1:
        raise ConfigError(
            f"the runs mix envs ({', '.join(envs)}); a comparison is per env: select runs of one env"
        )
    return envs[0]


def final_scores(runs: Sequence[Run]) -> tuple[np.ndarray, list[Run]]:
    """Final scores of the complete runs of one env, and the runs left out (failed, running, unscored)."""
    single_env(runs)
    used = [r for r in runs if r.complete]
    return np.asarray([r.final for r in used], dtype=np.float64), [r for r in runs if not r.complete]


@dataclass
class Curves:
    """Runs' curves on one grid: values (runs, points), NaN where a run has no data (never extrapolated)."""

    grid: np.ndarray
    values: np.ndarray
    interpolated: bool
    note: str


def align(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], grid: np.ndarray | None = None) -> Curves:
    """Put curves sampled at different x onto one grid by linear interpolation inside each curve's range.

    With `grid=None` the grid is the union of all x. When every curve has the same x, values are copied
    (no interpolation). Outside a curve's own range its values are NaN: gaps stay visible.
    """
    if not xs:
        raise ConfigError("no curves to align")
    if grid is None:
        grid = np.unique(np.concatenate([np.asarray(x, dtype=np.float64) for x in xs]))
    values = np.full((len(xs), grid.size), np.nan)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if x.size == 0:
            continue
        inside = (grid >= x[0]) & (grid <= x[-1])
        values[i, inside] = np.interp(grid[inside], x, y)
    # Interpolated = some run gets a value at a grid point inside its range where it was not evaluated.
    interpolated = any(
        np.setdiff1d(grid[(grid >= x[0]) & (grid <= x[-1])], np.asarray(x, dtype=np.float64)).size
        for x in xs
        if x.size
    )
    ends = sorted({int(x[-1]) for x in xs if x.size})
    if not interpolated:
        note = "runs evaluated at the same frames (no interpolation)"
    else:
        note = (
            f"evaluation grids differ between runs: values linearly interpolated onto {grid.size} points; "
            "no run is extended beyond its last evaluation"
        )
    if len(ends) > 1:
        note += f"; runs end at {', '.join(f'{v:,}' for v in ends)} (later points average fewer runs)"
    return Curves(grid, values, interpolated, note)


def frame_curves(runs: Sequence[Run]) -> Curves:
    """Evaluation returns of runs against frames, aligned on the union of their evaluation frames."""
    return align([r.frames.astype(np.float64) for r in runs], [r.returns for r in runs])


def time_curves(runs: Sequence[Run], points: int = 50) -> Curves:
    """Evaluation returns against wall-clock seconds, interpolated onto `points` evenly spaced times."""
    xs = [r.times[np.isfinite(r.times)] for r in runs]
    ys = [r.returns[np.isfinite(r.times)] for r in runs]
    end = max((float(x[-1]) for x in xs if x.size), default=0.0)
    grid = np.linspace(0.0, end, points) if end > 0 else np.zeros(1)
    curves = align(xs, ys, grid)
    curves.interpolated = True
    curves.note = (
        f"wall-clock times differ between runs: returns interpolated onto {grid.size} evenly spaced times"
    )
    return curves


def score_matrix(
    by_env: dict[str, list[Run]], envs: Sequence[str], normalized: bool = True
) -> tuple[np.ndarray, str]:
    """A (runs, tasks) matrix of final scores over `envs`, with a note on what was done to make it.

    The bootstrap needs the same number of runs per task: when counts differ the first m runs by seed are
    kept per env (m = the smallest count), and the note says so. Scores are normalised by each env's bounds.
    """
    cols, counts = [], []
    for env in envs:
        rows = sorted((r for r in by_env[env] if r.complete), key=lambda r: (r.seed, str(r.path)))
        counts.append(len(rows))
        scores = np.asarray([r.final for r in rows], dtype=np.float64)
        if normalized:
            bounds = rows[0].bounds if rows else None
            if bounds is None:
                raise ConfigError(
                    f"{env} has no normalisation bounds (common/evaluation/references/envs.yaml)"
                )
            scores = bounds.normalize(scores)
        cols.append(scores)
    m = min(counts) if counts else 0
    note = ""
    if len(set(counts)) > 1:
        note = (
            f"unequal runs per env ({dict(zip(envs, counts, strict=True))}): first {m} by seed used per env"
        )
    return np.stack([c[:m] for c in cols], axis=1) if m else np.zeros((0, len(envs))), note


def write_run_dir(
    path: Path,
    paper: str,
    env: str,
    seed: int,
    frames: Sequence[int],
    returns: Sequence[float],
    *,
    state: str = "finished",
    budget: int | None = None,
    seconds_per_frame: float = 1e-3,
    extra_info: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> Path:
    """Write a minimal run directory in run.py's layout (for tests and examples; no training involved)."""
    path.mkdir(parents=True, exist_ok=True)
    budget = int(frames[-1]) if budget is None and len(frames) else budget
    config = {
        "seed": seed,
        "tag": "",
        "paper": {"name": paper, "train": {"num_frames": budget}},
        "env": {"name": env},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    info = {
        "paper": paper,
        "env": env,
        "seed": seed,
        "config_hash": _hash_config(config),
        "git": {"sha": "0" * 40, "dirty": False},
        "host": "test",
        **(extra_info or {}),
    }
    (path / "run.json").write_text(json.dumps(info))
    if overrides:
        (path / ".hydra").mkdir(exist_ok=True)
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    status: dict[str, Any] = {"state": state}
    if state == "finished":
        status["score"] = float(returns[-1]) if len(returns) else None
    if state == "failed":
        status["error"] = "RuntimeError: synthetic failure"
    (path / "status.json").write_text(json.dumps(status))
    rows = [
        {"frame": int(f), "step": int(f), "episode_return": float(r), "time": f * seconds_per_frame}
        for f, r in zip(frames, returns, strict=True)
    ]
    (path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
