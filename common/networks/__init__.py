"""Generic networks shared by the papers.

`PixelEncoder` turns stacked frames into a flat representation, `Trunk` projects it to a small feature,
`mlp` builds the heads, `TwinQ` holds two Q heads. `orthogonal_init_` and `soft_update_` are the
DrQ-v2 initialisation and target-network update. `ResidualMLPDenoiser` is SynthER's diffusion denoiser.
"""

from common.networks.conv import PixelEncoder, conv_out_size
from common.networks.denoiser import ResidualMLPDenoiser
from common.networks.mlp import Trunk, TwinQ, mlp
from common.networks.weights import orthogonal_init_, soft_update_

__all__ = [
    "PixelEncoder",
    "ResidualMLPDenoiser",
    "Trunk",
    "TwinQ",
    "conv_out_size",
    "mlp",
    "orthogonal_init_",
    "soft_update_",
]
