"""Replay buffers and the batch they hand to agents; the SynthER diffusion upsampler and mixed replay."""

from common.buffers.base import Batch
from common.buffers.diffusion import DiffusionConfig, MixedReplay, SyntheticBuffer, TransitionUpsampler
from common.buffers.replay import NStepReplay

__all__ = ["Batch", "DiffusionConfig", "MixedReplay", "NStepReplay", "SyntheticBuffer", "TransitionUpsampler"]
