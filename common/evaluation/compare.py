"""AdaStop: decide how many seeds a comparison of papers on one env needs (Mathieu et al., TMLR 2024).

python -m common.evaluation.compare paper=sac,stream_ac env=cartpole_swingup debug=smoke --n 3 --K 3

At each interim k < K every paper still in an undecided comparison trains `n` new seeds through `run.py -m`
(the same launcher as any run, so `hydra/launcher=slurm` scales it out); their final scores go to adastop's
`MultipleAgentsComparator`, which decides each pair larger/smaller/continue with family-wise error <= alpha.
After interim K-1, pairs still undecided are "equal": no difference found with n*K runs, not proven equal.

The comparison directory holds the state (`adastop.json`) and the runs (`<paper>/interim_<k>/s<seed>`).
Running the same command again continues an interrupted comparison: finished runs are reused, and the
comparator is rebuilt by replaying the recorded interims with the same permutation seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ConfigError, RlreproError
from common.evaluation.runs import load_run

ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = "adastop.json"

#: launch(paper, seeds, sweep_dir) trains `seeds` of `paper` with run dirs `sweep_dir/s<seed>`.
Launch = Callable[[str, list[int], Path], None]


@dataclass(frozen=True)
class Settings:
    """Everything that defines a comparison; a comparison directory holds exactly one."""

    papers: tuple[str, ...]
    env: str
    overrides: tuple[str, ...] = ()
    n: int = 5  # runs per agent per interim (AdaStop tutorial: n = 5)
    K: int = 5  # maximum number of interims (AdaStop tutorial: K = 5)
    alpha: float = 0.05  # family-wise error (AdaStop CLI default 0.05; the Python class defaults to 0.01)
    B: int = 10_000  # random permutations when enumerating them all is too many (AdaStop default)
    beta: float = 0.0  # power spent on early "equal" decisions (adastop 0.1.3; paper's test uses 0)
    seed: int = 0  # permutation RNG; fixed so a resumed comparison replays identically
    first_seed: int = 1  # training seeds are first_seed, first_seed + 1, ... per agent

    def validate(self) -> None:
        if len(self.papers) < 2:
            raise ConfigError(f"compare needs two or more papers, got {list(self.papers)}: paper=a,b")
        if len(set(self.papers)) != len(self.papers):
            raise ConfigError(f"paper= lists a paper twice: {list(self.papers)}")
        if self.n < 1 or self.K < 1:
            raise ConfigError(f"--n and --K must be >= 1, got n={self.n}, K={self.K}")
        if not 0.0 < self.alpha < 1.0 or not 0.0 <= self.beta < 1.0:
            raise ConfigError(
                f"--alpha must be in (0, 1) and --beta in [0, 1), got {self.alpha}, {self.beta}"
            )
        if self.B < 2:
            raise ConfigError(f"--B must be >= 2 permutations, got {self.B}")
        for o in self.overrides:
            key = o.partition("=")[0].lstrip("+~")
            if key in ("seed", "paper", "env", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.run.dir"):
                raise ConfigError(f"compare sets {key}= itself; remove '{o}'")


@dataclass
class Interim:
    k: int
    seeds: dict[str, list[int]]
    scores: dict[str, list[float]]
    runs: dict[str, list[str]]
    decisions: dict[str, str]


@dataclass
class Comparison:
    """A comparison directory: its settings, the interims done so far, and the adastop comparator."""

    directory: Path
    settings: Settings
    interims: list[Interim] = field(default_factory=list)

    # ------------------------------------------------------------------------------- state on disk
    @classmethod
    def open(cls, directory: Path, settings: Settings) -> Comparison:
        """Open (or create) `directory`; fails when it already holds a comparison with other settings."""
        settings.validate()
        path = directory / STATE_FILE
        if path.exists():
            saved = json.loads(path.read_text())
            old = Settings(
                **{
                    **saved["settings"],
                    "papers": tuple(saved["settings"]["papers"]),
                    "overrides": tuple(saved["settings"]["overrides"]),
                }
            )
            if old != settings:
                diff = {
                    k: (v, getattr(settings, k)) for k, v in asdict(old).items() if v != getattr(settings, k)
                }
                raise ConfigError(
                    f"{directory} holds a comparison with other settings {diff} (saved, given); "
                    "use the saved settings to continue it, or choose another --dir"
                )
            return cls(directory, settings, [Interim(**i) for i in saved["interims"]])
        if directory.exists() and any(directory.iterdir()):
            raise ConfigError(f"{directory} exists and is not a comparison directory; choose another --dir")
        return cls(directory, settings)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"settings": asdict(self.settings), "interims": [asdict(i) for i in self.interims]}
        tmp = self.directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.directory / STATE_FILE)

    # ------------------------------------------------------------------------------------ the test
    def _comparator(self) -> Any:
        from adastop import MultipleAgentsComparator  # imports matplotlib and pandas: load on use

        s = self.settings
        return MultipleAgentsComparator(n=s.n, K=s.K, B=s.B, alpha=s.alpha, beta=s.beta, seed=s.seed)

    def _cumulative(self, upto: int) -> dict[str, np.ndarray]:
        # adastop needs ndarrays (a list fails on .ravel()), one per agent in a fixed order, cumulative.
        values: dict[str, list[float]] = {p: [] for p in self.settings.papers}
        for interim in self.interims[:upto]:
            for p, scores in interim.scores.items():
                values[p].extend(scores)
        return {p: np.asarray(v, dtype=np.float64) for p, v in values.items()}

    def replay(self) -> Any:
        """A comparator fed every recorded interim, in order; checks it reaches the recorded decisions."""
        comparator = self._comparator()
        for i, interim in enumerate(self.interims):
            comparator.partial_compare(self._cumulative(i + 1), verbose=False)
            if self._named(comparator) != interim.decisions:
                raise ConfigError(
                    f"{self.directory / STATE_FILE}: replaying interim {i} gives other decisions than saved; "
                    "the file was edited or adastop changed: start a new comparison in another --dir"
                )
        return comparator

    def _named(self, comparator: Any) -> dict[str, str]:
        names = self.settings.papers
        return {
            f"{names[i]} vs {names[j]}": comparator.decisions[str(c)]
            for c in comparator.comparisons
            for i, j in [tuple(c)]
        }

    def active(self, comparator: Any) -> list[str]:
        """Papers still in an undecided comparison (all of them before the first interim)."""
        if comparator.k == 0:
            return list(self.settings.papers)
        idx = {int(i) for pair in comparator.current_comparisons for i in pair}
        return [p for i, p in enumerate(self.settings.papers) if i in idx]

    def run(self, launch: Launch | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
        """Run interims until every comparison is decided or K interims are done; returns the results.

        With the default launcher (run.py), every arm's config is composed first: a bad arm stops the
        comparison before anything trains."""
        if launch is None:
            check_arms(self.settings)
            launch = subprocess_launch(self.settings)
        comparator = self.replay()
        s = self.settings
        while not comparator.is_finished and comparator.k < s.K:
            k = comparator.k
            interim = Interim(k, {}, {}, {}, {})
            for paper in self.active(comparator):
                seeds = [s.first_seed + k * s.n + i for i in range(s.n)]
                sweep = self.directory / paper / f"interim_{k}"
                log(f"interim {k}: {paper} seeds {seeds[0]}..{seeds[-1]} -> {sweep}")
                scores, runs = collect(paper, s.env, seeds, sweep, launch)
                interim.seeds[paper], interim.scores[paper], interim.runs[paper] = seeds, scores, runs
            self.interims.append(interim)
            comparator.partial_compare(self._cumulative(len(self.interims)), verbose=False)
            interim.decisions = self._named(comparator)
            self.save()
            log(f"interim {k}: " + ", ".join(f"{c}: {d}" for c, d in interim.decisions.items()))
        results = self.results(comparator)
        write_tables(self.directory, results)
        return results

    def results(self, comparator: Any) -> dict[str, Any]:
        """The decisions table: per pair decision and means; per paper runs used; the test's settings."""
        s = self.settings
        values = self._cumulative(len(self.interims))
        rows = []
        for pair, decision in self._named(comparator).items():
            a, b = pair.split(" vs ")
            rows.append(
                {
                    "agent1": a,
                    "agent2": b,
                    "decision": decision,
                    "mean1": float(values[a].mean()),
                    "mean2": float(values[b].mean()),
                    "mean_diff": float(values[a].mean() - values[b].mean()),
                    "std1": float(values[a].std()),
                    "std2": float(values[b].std()),
                }
            )
        return {
            "env": s.env,
            "papers": list(s.papers),
            "settings": asdict(s),
            "interims": len(self.interims),
            "finished": bool(comparator.is_finished),
            "runs_used": {p: int(values[p].size) for p in s.papers},
            "scores": {p: values[p].tolist() for p in s.papers},
            "comparisons": rows,
        }


# ----------------------------------------------------------------------------------------- launching
def _prepare(sweep: Path, seeds: Sequence[int]) -> list[int]:
    """Seeds still to launch: finished runs are kept; an unfinished run without a checkpoint is moved aside
    (run.py would refuse to resume it) and one with a checkpoint is continued by run.py."""
    todo = []
    for seed in seeds:
        run_dir = sweep / f"s{seed}"
        if not (run_dir / "config.yaml").exists():
            todo.append(seed)
            continue
        status = (
            json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
        )
        if status.get("state") == "finished":
            continue
        if not (run_dir / "checkpoints" / "latest").exists():
            i = 0
            while (aside := run_dir.with_name(f"{run_dir.name}.incomplete{i}")).exists():
                i += 1
            run_dir.rename(aside)
        todo.append(seed)
    return todo


def arm_overrides(settings: Settings, paper: str) -> list[str]:
    """The run.py overrides of one arm (its first seed)."""
    return [f"paper={paper}", f"env={settings.env}", f"seed={settings.first_seed}", *settings.overrides]


def _one_line(stderr: str) -> str:
    """Hydra's (or run.py's) error as one line: tab-indented lists joined by commas, the search path and
    the HYDRA_FULL_ERROR hint left out."""
    parts: list[str] = []
    listing = False
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or line.startswith("Set the environment variable HYDRA_FULL_ERROR"):
            continue
        if line == "Config search path:":
            listing = False
            parts.append("")  # a sentinel: its items are dropped below
            continue
        if raw.startswith("\t") and parts:
            if parts[-1]:
                parts[-1] += (", " if listing else " ") + line
                listing = True
            continue
        listing = False
        parts.append(line.removeprefix("error: "))
    return "; ".join(p.rstrip(".") for p in parts if p) or "(no output)"


def check_arms(settings: Settings, python: str = sys.executable) -> None:
    """Compose every arm with `run.py <arm overrides> --cfg job` (nothing runs); a one-line ConfigError
    naming the first arm that does not compose, with Hydra's error."""
    for paper in settings.papers:
        args = arm_overrides(settings, paper)
        proc = subprocess.run(
            [python, str(ROOT / "run.py"), *args, "--cfg", "job"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        )
        if proc.returncode != 0:
            raise ConfigError(
                f"arm {paper} does not compose (run.py {' '.join(args)}): {_one_line(proc.stderr)}; "
                "nothing was launched"
            )


def subprocess_launch(settings: Settings, python: str = sys.executable) -> Launch:
    """Launch seeds with `python run.py -m paper=P env=E seed=a,b,... OVERRIDES hydra.sweep.dir=...`."""

    def launch(paper: str, seeds: list[int], sweep: Path) -> None:
        cmd = [
            python,
            str(ROOT / "run.py"),
            "-m",
            f"paper={paper}",
            f"env={settings.env}",
            "seed=" + ",".join(map(str, seeds)),
            *settings.overrides,
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=s${seed}",
        ]
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ConfigError(f"run.py failed for {paper} seeds {seeds}: {last}")

    return launch


def collect(
    paper: str, env: str, seeds: list[int], sweep: Path, launch: Launch
) -> tuple[list[float], list[str]]:
    """Launch the seeds not finished yet, then read every seed's final score from its run directory."""
    todo = _prepare(sweep, seeds)
    if todo:
        sweep.mkdir(parents=True, exist_ok=True)
        launch(paper, todo, sweep)
    scores, runs = [], []
    for seed in seeds:
        run_dir = sweep / f"s{seed}"
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"{run_dir} was not created by the launch; re-run the same command to retry")
        run = load_run(run_dir)
        if run.paper != paper or not (run.env == env or run.env.startswith(env + "_")):
            raise ConfigError(f"{run_dir} holds {run.paper} on {run.env}, expected {paper} on {env}")
        if not run.complete or run.final is None:
            why = f" ({run.error})" if run.error else ""
            raise ConfigError(
                f"{run_dir} is {run.state}{why}, not finished with a score; fix it and re-run the command"
            )
        scores.append(float(run.final))
        runs.append(str(run_dir))
    return scores, runs


# ------------------------------------------------------------------------------------------ outputs
MEANING = (
    '"larger"/"smaller": agent1\'s mean final score is larger/smaller than agent2\'s, with family-wise '
    'error <= alpha over all pairs. "equal": no difference found within the runs used (not proof of '
    'equivalence). "continue": undecided, more interims allowed.'
)


def markdown_table(results: dict[str, Any]) -> str:
    """The decisions table as Markdown, with the test's settings and what the decisions mean."""
    s = results["settings"]
    lines = [
        f"AdaStop on `{results['env']}`: alpha={s['alpha']}, K={s['K']}, n={s['n']}, B={s['B']}, "
        f"beta={s['beta']}, permutation seed={s['seed']}; {results['interims']} interim(s) done"
        + ("" if results["finished"] else " (not finished: more interims allowed)"),
        "",
        "| agent1 | agent2 | decision | mean1 | mean2 | diff |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results["comparisons"]:
        lines.append(
            f"| {r['agent1']} | {r['agent2']} | **{r['decision']}** | {r['mean1']:.4g} | {r['mean2']:.4g} "
            f"| {r['mean_diff']:+.4g} |"
        )
    lines += ["", "| paper | runs used |", "|---|---:|"]
    lines += [f"| {p} | {n} |" for p, n in results["runs_used"].items()]
    lines += ["", MEANING]
    return "\n".join(lines) + "\n"


def write_tables(directory: Path, results: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "decisions.json").write_text(json.dumps(results, indent=1))
    (directory / "decisions.md").write_text(markdown_table(results))


def load_decisions(directory: Path) -> dict[str, Any]:
    """The decisions table a comparison directory holds (for reports)."""
    path = Path(directory) / "decisions.json"
    if not path.exists():
        raise ConfigError(
            f"{directory} holds no decisions.json; run python -m common.evaluation.compare first"
        )
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str]) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluation.compare",
        description="AdaStop comparison on one env: paper=a,b[,c] env=E [run.py overrides] [options]",
    )
    parser.add_argument("overrides", nargs="*", help="paper=a,b env=E and any other run.py overrides")
    parser.add_argument("--n", type=int, default=Settings.n, help="runs per agent per interim (5)")
    parser.add_argument("--K", type=int, default=Settings.K, help="maximum number of interims (5)")
    parser.add_argument("--alpha", type=float, default=Settings.alpha, help="family-wise error (0.05)")
    parser.add_argument("--B", type=int, default=Settings.B, help="random permutations (10000)")
    parser.add_argument("--beta", type=float, default=Settings.beta, help="early-equal power (0)")
    parser.add_argument("--seed", type=int, default=Settings.seed, help="permutation seed (0)")
    parser.add_argument("--first-seed", type=int, default=Settings.first_seed, help="first training seed (1)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="comparison directory (runs/compare/<env>/<papers>)"
    )
    args = parser.parse_args(list(argv))
    papers: list[str] = []
    env = None
    rest = []
    for o in args.overrides:
        key, eq, value = o.partition("=")
        if not eq:
            raise ConfigError(f"'{o}' is not key=value; give paper=a,b env=E and run.py overrides")
        if key == "paper":
            papers = [p for p in value.split(",") if p]
        elif key == "env":
            if "," in value:
                raise ConfigError(f"env={value}: AdaStop compares on one env; run one comparison per env")
            env = value
        else:
            rest.append(o)
    if env is None:
        raise ConfigError("give the env to compare on: env=<name>")
    settings = Settings(
        tuple(papers),
        env,
        tuple(rest),
        args.n,
        args.K,
        args.alpha,
        args.B,
        args.beta,
        args.seed,
        args.first_seed,
    )
    settings.validate()
    directory = args.dir or ROOT / "runs" / "compare" / env / "_vs_".join(papers)
    return settings, directory


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, directory = parse_args(sys.argv[1:] if argv is None else argv)
        results = Comparison.open(directory, settings).run()
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(results), end="")
    print(f"written: {directory / 'decisions.json'}, {directory / 'decisions.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
