"""Generic networks for pixel-based actor-critic agents (DrQ-v2 family).

`PixelEncoder` turns stacked frames into a flat representation, `Trunk` projects it to a small feature,
`mlp` builds the heads, `TwinQ` holds two Q heads. `orthogonal_init_` and `soft_update_` are the
DrQ-v2 initialisation and target-network update.
"""

from common.networks.conv import PixelEncoder, conv_out_size
from common.networks.mlp import Trunk, TwinQ, mlp
from common.networks.weights import orthogonal_init_, soft_update_

__all__ = ["PixelEncoder", "Trunk", "TwinQ", "conv_out_size", "mlp", "orthogonal_init_", "soft_update_"]
