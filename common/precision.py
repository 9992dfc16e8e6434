"""Mixed-precision switch for forward passes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from common.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """Return `precision` if it is one of `PRECISIONS`, else raise `ConfigError`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """ "fp32": nothing changes. "bf16": ``torch.autocast(device.type, dtype=torch.bfloat16)`` (CPU or CUDA).

    Wrap forward passes only; compute losses on ``.float()`` outputs and step optimizers outside.
    """
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield
