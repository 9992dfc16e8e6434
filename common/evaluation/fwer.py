"""AdaStop on simulated scores: its empirical family-wise error on equal agents and its early stopping.

    python -m common.evaluation.fwer --out results/adastop/simulation.json [--reps 300]

AdaStop (Mathieu et al. 2023, "AdaStop: adaptive statistical testing for sound comparisons of Deep RL
agents", arXiv 2306.10882) promises a family-wise error (FWE: the probability that any comparison among
agents that do not differ is declared different) of at most alpha, while stopping early when agents differ
clearly. This simulates both with the same `adastop` comparator `common.evaluation.compare` uses (n runs per
agent per interim, at most K interims, B permutations), drawing each agent's scores from a known
distribution, so the truth is known:

* `equal`: agents with one distribution (a bimodal mixture, as deep-RL final scores often are: most seeds
  succeed, some fail); every "larger"/"smaller" decision is an error.
* `gap`: two agents whose score distributions differ by a large shift; records the interims used and
  whether the decision is right.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

Sampler = Callable[[np.random.Generator, int], np.ndarray]


def bimodal(shift: float = 0.0) -> Sampler:
    """Scores of a deep-RL-like agent: 80 % of seeds succeed (N(1, 0.1²)), 20 % fail (N(0.2, 0.1²))."""

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        ok = rng.random(n) < 0.8
        return np.where(ok, rng.normal(1.0, 0.1, n), rng.normal(0.2, 0.1, n)) + shift

    return draw


def gaussian(shift: float = 0.0) -> Sampler:
    """Scores from N(shift, 1): the textbook continuous case, as a control for the bimodal one."""

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(shift, 1.0, n)

    return draw


DISTRIBUTIONS = {"bimodal": bimodal, "gaussian": gaussian}


def one_comparison(
    samplers: list[Sampler], n: int, K: int, alpha: float, B: int, rng: np.random.Generator, seed: int
) -> dict[str, Any]:
    """Run AdaStop to its end on fresh draws; the decisions per pair and the interims it used."""
    from adastop import MultipleAgentsComparator

    comparator = MultipleAgentsComparator(n=n, K=K, B=B, alpha=alpha, beta=0.0, seed=seed)
    scores = [np.zeros(0) for _ in samplers]
    while not comparator.is_finished and comparator.k < K:
        scores = [np.concatenate([s, draw(rng, n)]) for s, draw in zip(scores, samplers, strict=True)]
        comparator.partial_compare({str(i): s for i, s in enumerate(scores)}, verbose=False)
    decisions = {
        f"{i} vs {j}": comparator.decisions[str(c)] for c in comparator.comparisons for i, j in [tuple(c)]
    }
    return {"decisions": decisions, "interims": int(comparator.k)}


def simulate(
    samplers: list[Sampler], reps: int, n: int, K: int, alpha: float, B: int, seed: int, label: str
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        one_comparison(samplers, n, K, alpha, B, rng, seed + r)
        for r in tqdm(range(reps), desc=label, unit="test", dynamic_ncols=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluation.fwer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--reps", type=int, default=300, help="simulated comparisons per scenario (300)")
    parser.add_argument("--n", type=int, default=5, help="runs per agent per interim (5)")
    parser.add_argument("--K", type=int, default=5, help="maximum interims (5)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error level (0.05)")
    parser.add_argument("--B", type=int, default=10_000, help="random permutations (10000)")
    parser.add_argument("--agents", type=int, default=3, help="equal agents in the error scenario (3)")
    parser.add_argument("--gap", type=float, default=0.8, help="shift of the better agent (0.8)")
    parser.add_argument("--distribution", choices=sorted(DISTRIBUTIONS), default="bimodal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.reps < 1 or args.agents < 2:
        print("error: --reps must be >= 1 and --agents >= 2", file=sys.stderr)
        return 2
    t0 = time.time()
    common = {"n": args.n, "K": args.K, "alpha": args.alpha, "B": args.B}
    make = DISTRIBUTIONS[args.distribution]
    equal = simulate([make()] * args.agents, args.reps, seed=args.seed, label="equal agents", **common)
    gap = simulate([make(), make(args.gap)], args.reps, seed=args.seed + 10**6, label="large gap", **common)
    errors = [any(d != "equal" for d in r["decisions"].values()) for r in equal]
    right = [r["decisions"]["0 vs 1"] == "smaller" for r in gap]
    data: dict[str, Any] = {
        "settings": {**common, "reps": args.reps, "agents": args.agents, "gap": args.gap, "seed": args.seed},
        "distribution": {
            "bimodal": "per seed: N(1, 0.1^2) with prob. 0.8, N(0.2, 0.1^2) otherwise; + gap for agent 1",
            "gaussian": "per seed: N(0, 1); + gap for agent 1",
        }[args.distribution],
        "equal": {
            "family_wise_errors": int(sum(errors)),
            "reps": len(errors),
            "interims": [r["interims"] for r in equal],
        },
        "gap": {
            "interims": [r["interims"] for r in gap],
            "correct": int(sum(right)),
            "reps": len(right),
            "runs_per_agent": [r["interims"] * args.n for r in gap],
        },
        "seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    fwe = data["equal"]["family_wise_errors"] / args.reps
    print(
        f"{args.out}: FWE {fwe:.3f} (alpha {args.alpha}), gap decided right {sum(right)}/{args.reps}, "
        f"mean interims {np.mean(data['gap']['interims']):.2f}/{args.K}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
