"""The score of a uniformly random policy on a task, as the lower bound of a normalised score.

    python -m common.evaluation.random_policy --paper dqn --env minatar --set env.game=breakout \\
        --set env.game=asterix --episodes 100 --out results/hl_gauss/random_scores.json

Each `--set` value of the same key is one task (the env as the paper sees it, built by
`common.loop.build_env`); the JSON maps each task's env name to its mean return over `--episodes`
episodes, with the seed and episode count, so a results page can cite how its bounds were measured.
Discrete actions are drawn uniformly from ``[0, num_actions)``, continuous ones from ``[-1, 1]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import RlreproError


def random_return(env, episodes: int, seed: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Returns of `episodes` episodes of the uniform random policy in `env` (an `Env`)."""
    rng = np.random.default_rng(seed)
    spec = env.spec
    n = getattr(spec, "num_actions", None)
    returns = []
    for _ in range(episodes):
        ts = env.reset()
        while not ts.done:
            action = (
                np.asarray(rng.integers(n))
                if n is not None
                else rng.uniform(-1.0, 1.0, spec.action_shape).astype(np.float32)
            )
            ts = env.step(action)
        returns.append(float(ts.episode_return))
    return returns


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.evaluation.random_policy", description=__doc__)
    parser.add_argument("--paper", required=True, help="the paper whose view of the env to use (e.g. dqn)")
    parser.add_argument("--env", required=True, help="an env config name (conf/env/<name>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one task each")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from hydra import compose, initialize_config_dir

    from common.loop import build_env
    from common.registry import CONF_DIR

    try:
        if args.episodes < 1:
            raise RlreproError(f"--episodes={args.episodes} must be at least 1")
        scores: dict[str, float] = {}
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            for override in args.set or [None]:
                extra = [override] if override else []
                cfg = compose("config", [f"paper={args.paper}", f"env={args.env}", *extra])
                env = build_env(cfg, args.seed, evaluation=True)  # the whole game, raw score
                try:
                    returns = random_return(env, args.episodes, args.seed)
                finally:
                    env.close()
                scores[str(cfg.env.name)] = float(np.mean(returns))
                print(f"{cfg.env.name}: {scores[str(cfg.env.name)]:.3f} over {args.episodes} episodes")
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"random": scores, "episodes": args.episodes, "seed": args.seed, "paper": args.paper}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
