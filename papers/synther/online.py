"""Online SynthER: SAC at a high update-to-data ratio on batches half real, half diffusion-generated.

conglu1997/SynthER @e6835a5 `synther/online/online_exp.py` + `redq_rlpd_agent.py` (`REDQRLPDAgent`), settings
in `config/online/sac_synther_*.gin`. The agent is `papers.sac.agent.SACAgent`, unchanged ("no algorithmic
change"): everything SynthER adds is how batches are drawn, so it lives in the learning strategy below, which
the shared loop (`common.loop.run_loop`) drives exactly as it drives `ReplayUpdates`:

  every `retrain_every_frames` (first at 10k): fit a fresh diffusion model on the whole replay (normaliser
      refit), wipe the synthetic buffer and refill it with `num_samples` EMA samples;
  every update: batch = (1 - f) * B real rows + f * B synthetic rows (f = 0.5), all real before the first fit.

Each fit is logged to `<run_dir>/synther.jsonl` (loss, time, quality report, dynamics error on Gymnasium
MuJoCo) and its scalars join the next train row as `synther_*`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.buffers.diffusion import (
    DiffusionConfig,
    MixedReplay,
    MujocoDynamicsCheck,
    SyntheticBuffer,
    TransitionUpsampler,
    quality_report,
)
from common.envs import Env
from common.errors import CheckpointError, ConfigError
from common.loop import ReplayUpdates, run_loop, validate_run
from common.registry import loop
from common.runtime import RunContext


def diffusion_config(cfg: DictConfig) -> DiffusionConfig:
    return DiffusionConfig.from_mapping(cfg.synther.diffusion)


class SynthERUpdates(ReplayUpdates):
    """`ReplayUpdates` whose batches mix real and synthetic rows; retrains the upsampler on schedule."""

    run_dir: Path | None = None  # where fit reports go; set by `train` (None: not written)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        ReplayUpdates.validate(cfg)
        s = cfg.synther
        if s.mode != "online":
            raise ConfigError(f"synther.mode={s.mode} does not use the online loop; set synther.mode=online")
        if cfg.paper.pixels:
            raise ConfigError("SynthER models state transitions: paper.pixels must be false")
        if cfg.paper.buffer.nstep != 1:
            raise ConfigError(
                f"paper.buffer.nstep={cfg.paper.buffer.nstep}: synthetic transitions are one-step; "
                "set paper.buffer.nstep=1"
            )
        o = s.online
        checks = [
            (0.0 <= o.synthetic_fraction <= 1.0, f"synthetic_fraction={o.synthetic_fraction} not in [0, 1]"),
            (o.retrain_every_frames > 0, f"retrain_every_frames={o.retrain_every_frames} must be positive"),
            (o.num_samples >= 1, f"num_samples={o.num_samples} must be >= 1"),
            (
                o.quality_samples >= 0 and o.dynamics_check >= 0,
                "quality_samples, dynamics_check must be >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synther.online.{message}")
        if s.diffusion.batch_size is None:
            raise ConfigError("synther.diffusion.batch_size must be set online (SynthER: 256)")
        diffusion_config(cfg)

    def __init__(self, cfg: DictConfig, agent: Any, env: Env) -> None:
        super().__init__(cfg, agent, env)
        o, p = cfg.synther.online, cfg.paper
        self.enabled = bool(o.enabled)
        self.num_samples = int(o.num_samples)
        self.quality_samples, self.dynamics_n = int(o.quality_samples), int(o.dynamics_check)
        self.retrain_every = max(1, int(o.retrain_every_frames) // p.action_repeat)
        obs_dim, action_dim = env.spec.obs_shape[0], env.spec.action_shape[0]
        device = getattr(agent, "device", torch.device("cpu"))  # the run's device, as the agent got it
        self.upsampler = TransitionUpsampler(
            diffusion_config(cfg), obs_dim, action_dim, device, cfg.precision, cfg.seed
        )
        self.synthetic = SyntheticBuffer(p.buffer.discount, seed=cfg.seed + 1)
        self.mixed = MixedReplay(self.replay, self.synthetic, float(o.synthetic_fraction))
        self.checker: MujocoDynamicsCheck | None = None
        if cfg.env.suite == "gym" and p.action_repeat == 1 and self.dynamics_n > 0:
            checker = MujocoDynamicsCheck(cfg.env.id)
            self.checker = checker if checker.supported and checker.obs_dim == obs_dim else None
        self.saved = _SynthERState(
            self.replay if cfg.checkpoint.replay else None, self.upsampler, self.synthetic
        )

    def before_env_step(self, step: int) -> list[dict[str, float]]:
        fit = self.retrain(step) if self.enabled and step > 0 and step % self.retrain_every == 0 else {}
        updates = []
        if step >= self.seed_steps and step % self.every == 0 and self.replay.num_transitions() > 0:
            updates = [
                self.agent.update(self.mixed.sample(self.batch_size), step) for _ in range(self.repeats)
            ]
        if fit:  # the fit's scalars ride on the first update's metrics (the loop counts dicts as updates)
            updates[:1] = [{**(updates[0] if updates else {}), **fit}]
        return updates

    def retrain(self, step: int) -> dict[str, float]:
        """Fit a new upsampler on the whole replay, refill the synthetic buffer, report sample quality."""
        real = self.replay.one_step_transitions()
        result = self.upsampler.fit(real)
        synthetic = self.upsampler.sample(self.num_samples)
        oob = self.upsampler.last_action_out_of_bounds
        self.synthetic.refill(synthetic)
        report = (
            quality_report(real, _head(synthetic, self.quality_samples), oob) if self.quality_samples else {}
        )
        dyn = self.checker.error(synthetic, self.dynamics_n) if self.checker is not None else None
        scalars = {
            "synther_loss": result.loss,
            "synther_real_transitions": float(result.transitions),
            **{f"synther_{k}": float(v) for k, v in report.items() if k != "per_dim"},
            **({"synther_dynamics_error": dyn} if dyn is not None else {}),
        }
        if self.run_dir is not None:
            row: dict[str, Any] = {"step": step, "fit": self.upsampler.fits, **scalars}
            row["fit_seconds"] = result.seconds
            row["per_dim"] = report.get("per_dim")  # wall-clock and per-dim lists stay out of train rows
            with open(self.run_dir / "synther.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        return scalars


def _head(t: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    return {k: v[:n] for k, v in t.items()}


class _SynthERState:
    """What checkpoints hold besides `state.pt`: the replay (when `checkpoint.replay`), the upsampler (EMA
    weights + normaliser) and the synthetic buffer, so a resume continues without refitting."""

    def __init__(self, replay: Any, upsampler: TransitionUpsampler, synthetic: SyntheticBuffer) -> None:
        self.replay, self.upsampler, self.synthetic = replay, upsampler, synthetic

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.replay is not None:
            self.replay.save(directory)
        (directory / "synther").mkdir(exist_ok=True)
        torch.save(self.upsampler.state_dict(), directory / "synther" / "upsampler.pt")
        self.synthetic.save(directory / "synther" / "synthetic")

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        if self.replay is not None:
            self.replay.load(directory)
        path = directory / "synther" / "upsampler.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # missing or truncated file
            raise CheckpointError(
                f"{path} is missing or unreadable ({type(e).__name__}); start a new run"
            ) from e
        self.upsampler.load_state_dict(state)
        self.synthetic.load(directory / "synther" / "synthetic")


def train(cfg: DictConfig, ctx: RunContext) -> float:
    """`paper.loop` of `synther.mode=online`: the shared loop with SynthER's mixed, retrained replay."""

    class Updates(SynthERUpdates):
        run_dir = ctx.run_dir

    return run_loop(cfg, ctx, Updates)


def validate(cfg: DictConfig) -> None:
    validate_run(cfg)
    SynthERUpdates.validate(cfg)


train = loop(validate=validate)(train)  # common.launch validates once, before writing the run dir
