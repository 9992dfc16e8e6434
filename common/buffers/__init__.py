"""Replay buffers and the batch they hand to agents."""

from common.buffers.base import Batch
from common.buffers.replay import NStepReplay

__all__ = ["Batch", "NStepReplay"]
