"""Image augmentation for pixel RL (drqv2 `drqv2.py`, class `RandomShiftsAug`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RandomShiftsAug(nn.Module):
    """Random shifts of up to ±`pad` pixels: replicate-pad by `pad`, then crop back to the input size.

    The crop offset (dx, dy) is an integer in [0, 2*pad] per axis, drawn once per batch item (from the
    global torch RNG) and shared by all its channels, i.e. by every stacked frame. The crop is done
    with bilinear `grid_sample` at exact pixel centres as in DrQ-v2, so the output equals the integer
    crop up to float32 rounding (measured < 4e-3 on the 0..255 scale at 84x84).
    """

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = int(pad)

    def sample_shift(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``(n, 2)`` int64 offsets ``(dx, dy)`` in [0, 2*pad]: what `forward` draws when given none."""
        return torch.randint(0, 2 * self.pad + 1, (n, 2), device=device)

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Shift a ``(B, C, H, W)`` batch; returns float32 (or `x`'s float dtype).

        `shift` (optional, ``(B, 2)`` integers ``(dx, dy)`` in [0, 2*pad]) fixes the offsets: output pixel
        ``(y, x)`` is padded pixel ``(y + dy, x + dx)``, i.e. input pixel ``(y + dy - pad, x + dx - pad)``
        clamped to the image.
        """
        if not x.is_floating_point():
            x = x.float()
        n, _, h, w = x.shape
        p = self.pad
        if shift is None:
            shift = self.sample_shift(n, x.device)
        x = F.pad(x, (p, p, p, p), mode="replicate")
        hp, wp = h + 2 * p, w + 2 * p
        # Normalised coordinates of the padded image's pixel centres (align_corners=False): -1 + (2i+1)/size.
        xs = torch.linspace(-1.0 + 1.0 / wp, 1.0 - 1.0 / wp, wp, device=x.device, dtype=x.dtype)[:w]
        ys = torch.linspace(-1.0 + 1.0 / hp, 1.0 - 1.0 / hp, hp, device=x.device, dtype=x.dtype)[:h]
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        # One pixel is 2/size in normalised units; the same offset for every channel of an item.
        scale = torch.tensor([2.0 / wp, 2.0 / hp], device=x.device, dtype=x.dtype)
        offset = shift.to(device=x.device, dtype=x.dtype) * scale  # (n, 2)
        grid = base.unsqueeze(0) + offset.view(n, 1, 1, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
