"""A diffusion upsampler of transitions (SynthER, Lu et al. 2023, arXiv 2303.06614) and its mixed replay.

The model is unconditional over one flat vector per transition, ``x = [s, a, r, s', done]`` (done only when
modelled), standardised per dimension. It is trained with EDM (Karras et al. 2022, arXiv 2206.00364) and
sampled with EDM's stochastic Heun sampler (Algorithm 2), as conglu1997/SynthER @e6835a5
`synther/diffusion/elucidated_diffusion.py`. One module per concern:

  config.py     `DiffusionConfig`: every hyperparameter, SynthER's defaults; `KEYS` of a transition dict
  layout.py     `TransitionLayout` (dict <-> flat vector), `StandardNormalizer`
  edm.py        `EDM`: preconditioning, loss weight, training loss, Heun and DPM-Solver++ samplers
  upsampler.py  `TransitionUpsampler` (``fit(transitions)`` / ``sample(n)``), its `EMA` and `FitResult`
  synthetic.py  `SyntheticBuffer` + `MixedReplay`: a fraction of each batch synthetic
  quality.py    `quality_report`, `MujocoDynamicsCheck`: how good the samples are

Transitions are dicts of arrays named as `common.offline.data.OfflineData`: observations, actions, rewards,
next_observations, terminations. Import the public names from this package.
"""

from common.buffers.diffusion.config import KEYS, SAMPLERS, DiffusionConfig, Transitions
from common.buffers.diffusion.edm import EDM
from common.buffers.diffusion.layout import StandardNormalizer, TransitionLayout
from common.buffers.diffusion.quality import MujocoDynamicsCheck, quality_report
from common.buffers.diffusion.synthetic import MixedReplay, SyntheticBuffer, concat_batches
from common.buffers.diffusion.upsampler import EMA, FitResult, TransitionUpsampler

__all__ = [
    "EDM",
    "EMA",
    "KEYS",
    "SAMPLERS",
    "DiffusionConfig",
    "FitResult",
    "MixedReplay",
    "MujocoDynamicsCheck",
    "StandardNormalizer",
    "SyntheticBuffer",
    "TransitionLayout",
    "TransitionUpsampler",
    "Transitions",
    "concat_batches",
    "quality_report",
]
