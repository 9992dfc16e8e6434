"""`python -m common.hpo SPACE [run overrides] [options]`: run or resume an Optuna study (hpo/study.py).

python -m common.hpo conf/hpo/sac.yaml env=hopper --trials 100 --workers 4 --launcher slurm
python -m common.hpo conf/hpo/sac.yaml env=cartpole_swingup debug=smoke --trials 12 --seeds 0,1
python -m common.hpo worker runs/hpo/sac_hopper 3      # one more worker on a running study
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common.errors import ConfigError, RlreproError


def parse_seeds(text: str) -> list[int]:
    """`0-4` → [0, 1, 2, 3, 4]; `0,1,7` → [0, 1, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
        raise ConfigError(f"seeds {text!r}: write them as 0-4 or 0,1,2") from None
    return seeds


def load_space_file(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        hpo = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "conf" / "hpo").glob("*.yaml"))
        raise ConfigError(f"search space {path} not found; conf/hpo/ has {', '.join(hpo)}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with paper, env and params")
    return data


def build_spec(args: argparse.Namespace) -> tuple[Any, Path]:
    from common.hpo.study import DEFAULT_TEST_SEEDS as DEFAULT_TEST
    from common.hpo.study import DEFAULT_TUNING_SEEDS as DEFAULT_TUNING
    from common.hpo.study import StudySpec

    data = load_space_file(Path(args.space))
    known = {"paper", "env", "params", "overrides", "metric", "direction", "n_trials", "tuning_seeds"}
    known |= {"test_seeds", "sampler", "pruner"}
    unknown = sorted(set(data) - known)
    if unknown:
        expected = ", ".join(sorted(known))
        raise ConfigError(f"{args.space}: unknown key(s) {', '.join(unknown)}; expected {expected}")
    run_overrides, launcher_overrides = [], []
    paper, env = data.get("paper"), data.get("env")
    for o in args.overrides:
        key, _, value = o.partition("=")
        if key == "paper":
            paper = value
        elif key == "env":
            env = value
        elif key.startswith("hydra.launcher."):
            launcher_overrides.append(o)
        else:
            run_overrides.append(o)
    if not paper or not env:
        raise ConfigError(f"{args.space} names no paper/env: add paper=... env=... to the command")
    pruner = dict(data.get("pruner") or {"name": "median"})
    if args.pruner:
        pruner = {**(pruner if pruner.get("name") == args.pruner else {}), "name": args.pruner}
    sampler = dict(data.get("sampler") or {"name": "tpe"})
    if args.sampler:
        sampler = {**(sampler if sampler.get("name") == args.sampler else {}), "name": args.sampler}
    defaults = StudySpec(space_file="", paper="", env="", params={})
    spec = StudySpec(
        space_file=str(args.space),
        paper=str(paper),
        env=str(env),
        params=data.get("params") or {},
        overrides=[*(data.get("overrides") or []), *run_overrides],
        launcher_overrides=launcher_overrides,
        metric=str(data.get("metric", defaults.metric)),
        direction=str(data.get("direction", defaults.direction)),
        n_trials=args.trials or int(data.get("n_trials", defaults.n_trials)),
        tuning_seeds=parse_seeds(args.seeds)
        if args.seeds
        else list(data.get("tuning_seeds", DEFAULT_TUNING)),
        test_seeds=parse_seeds(args.test_seeds)
        if args.test_seeds
        else list(data.get("test_seeds", DEFAULT_TEST)),
        sampler=sampler,
        pruner=pruner,
        workers=args.workers,
        launcher=args.launcher,
        storage=args.storage,
    )
    study_dir = Path(args.study_dir or f"runs/hpo/{Path(args.space).stem}_{env}")
    return spec, study_dir


def main(argv: list[str]) -> int:
    # what each trial's run.json records as its command: the study's, also in workers and SLURM jobs
    command = " ".join(["python -m common.hpo", *argv])
    if argv[:1] == ["worker"]:
        os.environ.setdefault("RLREPRO_COMMAND", command)  # a worker the driver started: the driver's
    else:
        os.environ["RLREPRO_COMMAND"] = command
    if argv[:1] == ["worker"]:
        from common.hpo.study import work

        if len(argv) != 3:
            raise ConfigError("usage: python -m common.hpo worker STUDY_DIR INDEX")
        work(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m common.hpo", description="Run or resume an Optuna study of a paper's config."
    )
    parser.add_argument("space", help="search space file, e.g. conf/hpo/sac.yaml")
    parser.add_argument(
        "overrides", nargs="*", help="run overrides: env=..., debug=smoke, hydra.launcher.*=..."
    )
    parser.add_argument("--trials", type=int, help="trials in total (default: the space file's n_trials)")
    parser.add_argument("--seeds", help="tuning seeds, e.g. 0-4 (default) or 0,1")
    parser.add_argument("--test-seeds", help="test seeds, disjoint from the tuning seeds (default 100-109)")
    parser.add_argument("--workers", type=int, default=1, help="parallel workers (processes or SLURM jobs)")
    parser.add_argument("--launcher", default="local", help="local (default) or slurm (hydra/launcher=slurm)")
    parser.add_argument("--sampler", help="tpe (default) or random")
    parser.add_argument("--pruner", help="median (default), hyperband or none")
    parser.add_argument("--storage", help="an RDB URL instead of the journal file in the study directory")
    parser.add_argument("--study-dir", help="default runs/hpo/<space>_<env>; the same command resumes it")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the options

    from common.hpo.study import run_study

    spec, study_dir = build_spec(args)
    report = run_study(spec, study_dir)
    print(
        f"best trial {report['best']['trial']}: tuning {report['tuning_mean']:.4g}, "
        f"test {report['test_mean']:.4g} (gap {report['gap']:.3g}); report: {study_dir}/report.md"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
