"""From a composed config to a finished run: the run directory, the paper's loop, and the exit status.

`run.py` calls `start()` for a new run and `resume()` for `resume=<run_dir>`. A paper's loop is the dotted
path `paper.loop`; its agent is `paper.entry`. Nothing here names a paper.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from common.config import resolved_yaml
from common.errors import CheckpointError, ConfigError
from common.registry import Loop, import_loop
from common.runtime import (
    EndRun,
    OnEval,
    RunContext,
    StopFlag,
    config_hash,
    new_run_info,
    requeue_after_stop,
    resolve_device,
    seed_everything,
    write_json,
)

CONFIG_FILE = "config.yaml"
INFO_FILE = "run.json"
STATUS_FILE = "status.json"


def start(cfg: DictConfig, run_dir: Path, on_eval: OnEval | None = None, requeue: bool = True) -> float:
    """Start a new run in `run_dir`, or continue it when it holds this very config (a SLURM requeue).

    `on_eval(frame, eval_row, agent)` is called after every logged evaluation (HPO reports through it).
    `requeue=False`: after a stop signal inside a SLURM job, return instead of requeueing the job (HPO
    workers record the interrupted trial themselves, and a later run of the study retries it).

    The config is validated (`paper.loop`'s `validate`) here and only here, once per run: before the run
    directory is written. A requeued or resumed run continues the saved config, which passed then.
    """
    text = resolved_yaml(cfg)  # unresolvable or unset values fail before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        same = config_hash(_config(saved.read_text())) == config_hash(cfg)
        if not same:
            raise ConfigError(
                f"run directory {run_dir} already holds another run; choose a new hydra.run.dir"
            )
        if (run_dir / "checkpoints").exists():
            return resume(run_dir, [], on_eval, requeue)
        # killed before its first checkpoint (e.g. a requeued job): nothing to continue, start it again here
        for name in ("train.jsonl", "eval.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        info_path = run_dir / INFO_FILE
        info = json.loads(info_path.read_text()) if info_path.exists() else new_run_info(cfg)
        return _run(_config(text), run_dir, False, info, on_eval, requeue)
    validated_loop(cfg)  # impossible sizes fail before the run directory is written
    saved.write_text(text)
    info = new_run_info(cfg)
    write_json(run_dir / INFO_FILE, info)
    return _run(_config(text), run_dir, False, info, on_eval, requeue)


def validated_loop(cfg: DictConfig) -> Loop:
    """`paper.loop`, after its `validate(cfg)` passed (one-line ConfigErrors otherwise)."""
    loop = import_loop(cfg.paper.loop)
    loop.validate(cfg)
    return loop


def _config(text: str) -> DictConfig:
    """A config from its saved YAML (what the run directory's config.yaml holds)."""
    cfg = OmegaConf.create(text)
    assert isinstance(cfg, DictConfig)
    return cfg


def load_run_config(run_dir: Path) -> DictConfig:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise ConfigError(f"resume={run_dir}: no {CONFIG_FILE} there; pass a run directory made by run.py")
    return _config(path.read_text())


def resume(
    run_dir: Path, overrides: Sequence[str], on_eval: OnEval | None = None, requeue: bool = True
) -> float:
    """Continue `run_dir` with its saved config. Only `paper=`/`env=` naming the same choices may be given."""
    cfg = load_run_config(run_dir)
    for override in overrides:
        key, _, value = override.partition("=")
        if key in ("paper", "env"):
            saved = cfg.paper.name if key == "paper" else cfg.env.name
            if value != saved and not str(saved).startswith(value + "_"):
                raise ConfigError(
                    f"resume={run_dir} was made with {key}={saved}, not {key}={value}: "
                    f"drop {key}= or resume a {value} run"
                )
        else:
            raise ConfigError(
                f"resume continues a run with its saved config; remove '{override}' "
                f"(or start a new run with it)"
            )
    info_path = run_dir / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else new_run_info(cfg)
    return _run(cfg, run_dir, True, info, on_eval, requeue)


def _run(
    cfg: DictConfig, run_dir: Path, resuming: bool, info: dict, on_eval: OnEval | None, requeue: bool
) -> float:
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    if resuming and not (run_dir / "checkpoints").exists():
        raise CheckpointError(f"resume={run_dir}: the run has no checkpoints/ yet; start it again instead")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    loop = import_loop(cfg.paper.loop)  # validated when the run directory was written: not again
    status = {"state": "running", "started": time.time(), "resumed": resuming}
    write_json(run_dir / STATUS_FILE, status)
    with StopFlag() as stop:
        ctx = RunContext(
            run_dir=run_dir, device=device, resuming=resuming, stop=stop, info=info, on_eval=on_eval
        )
        try:
            score = loop(cfg, ctx)
        except EndRun as e:  # ended on purpose by on_eval (an HPO trial pruned): not a failure
            write_json(
                run_dir / STATUS_FILE, {**status, "state": e.state, "ended": time.time(), "reason": str(e)}
            )
            raise
        except BaseException as e:
            write_json(
                run_dir / STATUS_FILE, {**status, "state": "failed", "error": f"{type(e).__name__}: {e}"}
            )
            raise
    state = "preempted" if stop else "finished"
    final = score if math.isfinite(score) else None  # no evaluation finished yet: null, not NaN
    write_json(run_dir / STATUS_FILE, {**status, "state": state, "ended": time.time(), "score": final})
    if stop:
        print(f"stopped with a checkpoint; continue with: python run.py resume={run_dir}", file=sys.stderr)
        if requeue:
            requeue_after_stop(stop.signal)  # inside a SLURM job: back in the queue, resumes from here
    return score
