"""The synthetic buffer SynthER refills after each fit, and the replay that mixes it into real batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.buffers.base import Batch
from common.buffers.diffusion.config import KEYS, Transitions
from common.errors import CheckpointError, ConfigError


class SyntheticBuffer:
    """A fixed set of synthetic one-step transitions, replaced wholesale at each refresh (SynthER wipes
    and refills its diffusion buffer after every retrain)."""

    def __init__(self, discount: float, seed: int) -> None:
        self.discount = float(discount)
        self.rng = np.random.default_rng(seed)
        self.data: Transitions | None = None

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data["rewards"])

    def refill(self, transitions: Transitions) -> None:
        self.data = {k: np.ascontiguousarray(transitions[k], np.float32) for k in KEYS}

    def sample(self, batch_size: int) -> Batch:
        assert self.data is not None, "SyntheticBuffer.sample() before refill()"
        d = self.data
        idx = self.rng.integers(0, len(self), size=batch_size)
        return Batch(
            obs=d["observations"][idx],
            action=d["actions"][idx],
            reward=d["rewards"][idx, None],
            discount=(self.discount * (1.0 - d["terminations"][idx]))[:, None].astype(np.float32),
            next_obs=d["next_observations"][idx],
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if self.data is not None:
            for k in KEYS:
                np.save(directory / f"{k}.npy", self.data[k], allow_pickle=False)
        (directory / "rng.json").write_text(json.dumps(self.rng.bit_generator.state))

    def load(self, directory: Path) -> None:
        try:
            self.rng.bit_generator.state = json.loads((directory / "rng.json").read_text())
            present = [(directory / f"{k}.npy").exists() for k in KEYS]
            self.data = {k: np.load(directory / f"{k}.npy") for k in KEYS} if all(present) else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"saved synthetic buffer at {directory} is unreadable ({e}); delete it"
            ) from e


def concat_batches(a: Batch, b: Batch) -> Batch:
    return Batch(
        *(
            np.concatenate([getattr(a, k), getattr(b, k)])
            for k in ("obs", "action", "reward", "discount", "next_obs")
        )
    )


class MixedReplay:
    """Batches of which ``round(fraction * B)`` rows come from `synthetic` and the rest from `real` (any
    object with ``sample(n) -> Batch``). All rows are real while the synthetic buffer is empty (SynthER
    `diffusion_sample_ratio=0.5`: 128 real + 128 synthetic of 256)."""

    def __init__(self, real: Any, synthetic: SyntheticBuffer, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"synthetic fraction {fraction} must be in [0, 1]")
        self.real, self.synthetic, self.fraction = real, synthetic, float(fraction)

    def synthetic_rows(self, batch_size: int) -> int:
        return int(round(self.fraction * batch_size)) if len(self.synthetic) > 0 else 0

    def sample(self, batch_size: int) -> Batch:
        k = self.synthetic_rows(batch_size)
        if k == 0:
            return self.real.sample(batch_size)
        if k == batch_size:
            return self.synthetic.sample(batch_size)
        return concat_batches(self.real.sample(batch_size - k), self.synthetic.sample(k))
