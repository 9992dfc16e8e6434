"""The HPO report: what was tuned, on what budget and seeds, the incumbent, and how it holds on test seeds.

Files in the study directory: `report.json` (everything, machine-readable), `report.md` (for people),
`history.png` (each trial's tuning score and the best so far), `intermediate.png` (the evaluations the pruner
saw), `importance.png` (Optuna's default PED-ANOVA importances), and `tuned.yaml`, the incumbent as an
experiment file (copy it to `conf/experiment/` and run `python run.py experiment=<name>`).
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from common.hpo.space import to_overrides


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # e.g. a conditional space whose parameters never co-occurred in completed trials


def _tuned_yaml(spec: Any, best: FrozenTrial, summary: dict[str, Any]) -> str:
    nested: dict[str, Any] = {}
    for path, value in best.params.items():
        node = nested
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    import yaml

    header = (
        "# @package _global_\n"
        f"# Tuned by common.hpo ({spec.space_file}): trial {best.number}, {spec.metric} "
        f"{summary['tuning_mean']:.4g} on tuning seeds {spec.tuning_seeds}, "
        f"{summary['test_mean']:.4g} on test seeds {spec.test_seeds}.\n"
        f"# Study overrides (not included): {' '.join(spec.overrides) or 'none'}\n"
        "defaults:\n"
        f"  - override /paper: {spec.paper}\n"
        f"  - override /env: {spec.env}\n\n"
    )
    return header + yaml.safe_dump(nested, sort_keys=False)


def _plots(study: optuna.Study, study_dir: Path, importances: dict[str, float], direction: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = study.get_trials(deepcopy=False)
    made = []
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    values = [float(t.value or 0.0) for t in done]
    ax.scatter([t.number for t in done], values, s=18, label="complete (tuning mean)")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        label = "pruned (last eval)"
        ax.scatter([t.number for t in pruned], last, s=18, marker="x", color="grey", label=label)
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t.number):
        assert t.value is not None
        if best is None or (t.value > best if direction == "maximize" else t.value < best):
            best = t.value
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel="objective", title="optimisation history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(study_dir / "history.png", dpi=120)
    plt.close(fig)
    made.append("history.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            style = {"color": "grey", "alpha": 0.6} if t.state == TrialState.PRUNED else {"color": "C0"}
            ax.plot(steps, [t.intermediate_values[s] for s in steps], lw=1, **style)
    ax.set(
        xlabel="evaluation (tuning seeds in order)", ylabel="reported value", title="pruning (grey: pruned)"
    )
    fig.tight_layout()
    fig.savefig(study_dir / "intermediate.png", dpi=120)
    plt.close(fig)
    made.append("intermediate.png")

    if importances:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.4 * len(importances)))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set(xlabel="importance", title="hyperparameter importance (completed trials)")
        fig.tight_layout()
        fig.savefig(study_dir / "importance.png", dpi=120)
        plt.close(fig)
        made.append("importance.png")
    return made


def write_report(
    study: optuna.Study, spec: Any, study_dir: Path, best: FrozenTrial, tests: dict[str, float]
) -> dict[str, Any]:
    """Write the report files; returns the report's content."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState}
    test_values = list(tests.values())
    assert best.value is not None
    test_mean = statistics.fmean(test_values)
    summary = {
        "tuning_mean": best.value,
        "test_mean": test_mean,
        "test_std": statistics.pstdev(test_values),
        # positive when the incumbent looks better on the seeds it was chosen on (maximising)
        "gap": best.value - test_mean if spec.direction == "maximize" else test_mean - best.value,
    }
    importances = _importances(study)
    report = {
        "study_dir": str(study_dir),
        "space_file": spec.space_file,
        "paper": spec.paper,
        "env": spec.env,
        "overrides": spec.overrides,
        "metric": spec.metric,
        "direction": spec.direction,
        "sampler": spec.sampler,
        "pruner": spec.pruner,
        "search_space": spec.params,
        "budget": {"n_trials": spec.n_trials, "runs_per_trial": len(spec.tuning_seeds), "trials": counts},
        "tuning_seeds": spec.tuning_seeds,
        "test_seeds": spec.test_seeds,
        "best": {
            "trial": best.number,
            "params": best.params,
            "tuning_scores": best.user_attrs.get("scores", {}),
            "overrides": to_overrides(best.params),
        },
        "test_scores": tests,
        **summary,
        "importances": importances,
        "history": [
            {"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params}
            for t in trials
        ],
    }
    report["plots"] = _plots(study, study_dir, importances, spec.direction)
    (study_dir / "report.json").write_text(json.dumps(report, indent=1))
    (study_dir / "tuned.yaml").write_text(_tuned_yaml(spec, best, summary))
    (study_dir / "report.md").write_text(_markdown(report))
    return report


def _markdown(r: dict[str, Any]) -> str:
    run = " ".join([f"paper={r['paper']}", f"env={r['env']}", *r["best"]["overrides"]])
    lines = [
        f"# HPO report: {r['paper']} on {r['env']}",
        "",
        f"Space `{r['space_file']}`, objective: mean final `{r['metric']}` over tuning seeds "
        f"{r['tuning_seeds']} ({r['direction']}). Sampler {r['sampler']}, pruner {r['pruner']}.",
        f"Study overrides: `{' '.join(r['overrides']) or 'none'}`. Trials: "
        + ", ".join(f"{n} {k}" for k, n in r["budget"]["trials"].items() if n),
        "",
        "| | value |",
        "|---|---|",
        f"| best trial | {r['best']['trial']} |",
        f"| tuning mean (seeds {r['tuning_seeds']}) | {r['tuning_mean']:.4g} |",
        f"| test mean ± sd (seeds {r['test_seeds']}) | {r['test_mean']:.4g} ± {r['test_std']:.3g} |",
        f"| tuning − test gap | {r['gap']:.4g} |",
        "",
        "## Best parameters",
        "",
        "| parameter | value | importance |",
        "|---|---|---|",
        *[
            f"| `{k}` | {v} | {r['importances'].get(k, float('nan')):.3f} |"
            for k, v in r["best"]["params"].items()
        ],
        "",
        f"Run it: `python run.py {run}` (or copy `tuned.yaml` to `conf/experiment/`).",
        "",
        "Plots: " + ", ".join(f"`{p}`" for p in r["plots"]),
        "",
    ]
    return "\n".join(lines)
