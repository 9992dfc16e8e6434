"""Network diagnostics: the dormant-neuron ratio (Sokar et al., 2023; used by DrM, Xu et al., 2024).

A unit ``i`` of a layer with activations ``a`` is *dormant* when its mean absolute activation over the
batch is below a fraction `tau` of the layer's average: ``s_i = mean_b |a_bi|`` and ``s_i < tau * mean_j s_j``
(strict). The dormant ratio of a set of layers is the number of dormant units over the number of units,
pooled over the layers (not a mean of per-layer ratios). A layer whose activations are all zero has no
dormant unit under the strict test (``0 < 0`` is false), as in DrM's `utils.cal_dormant_ratio`.

Which tensor stands for a layer (a Linear's output, or the output of the activation after it) is the
caller's choice: record the modules whose outputs you want with `record_outputs`, then call
`dormant_ratio` on what was recorded. `module_dormant_ratio` does both for one forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["dormant_mask", "dormant_ratio", "module_dormant_ratio", "record_outputs", "unit_scores"]


def unit_scores(activation: torch.Tensor) -> torch.Tensor:
    """``s_i``: mean absolute activation of each unit; units are dim 1, all other dims are averaged.

    ``(B, N)`` -> ``(N,)`` (Linear layers); ``(B, C, H, W)`` -> ``(C,)`` (a conv channel is one unit).
    """
    if activation.dim() < 2:
        raise ValueError(
            f"activations need a batch and a unit dimension, got shape {tuple(activation.shape)}"
        )
    a = activation.detach().float().abs()
    dims = [d for d in range(a.dim()) if d != 1]
    return a.mean(dim=dims)


def dormant_mask(activation: torch.Tensor, tau: float) -> torch.Tensor:
    """Boolean ``(N,)``: which units of this layer are dormant (``s_i < tau * mean_j s_j``, strict)."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    scores = unit_scores(activation)
    return scores < tau * scores.mean()


def dormant_ratio(activations: Sequence[torch.Tensor], tau: float) -> float:
    """Dormant units / all units over the layers in `activations` (one tensor per layer, batch first)."""
    if len(activations) == 0:
        raise ValueError("dormant_ratio needs at least one layer's activations")
    masks = [dormant_mask(a, tau) for a in activations]
    dormant = torch.stack([m.sum() for m in masks]).sum()
    total = sum(m.numel() for m in masks)
    return float(dormant.item()) / total


@contextlib.contextmanager
def record_outputs(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Record the output of each module in `modules` during the forward passes inside the block.

    Yields a list with one slot per module (in the given order) holding that module's latest output,
    or None if it did not run. Hooks keep a *reference* to the output: a later in-place operation on it
    (e.g. ``nn.ReLU(inplace=True)``) changes what is recorded. Hooks are removed on exit.
    """
    outputs: list[torch.Tensor | None] = [None] * len(modules)

    def hook_for(i: int) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            outputs[i] = output

        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def module_dormant_ratio(
    model: nn.Module | Callable[[], Any],
    layers: Sequence[nn.Module],
    tau: float,
    *inputs: Any,
) -> float:
    """Run ``model(*inputs)`` once without gradients and return the dormant ratio of `layers`' outputs.

    `layers` are submodules whose outputs stand for the measured layers (e.g. every ``nn.Linear``, or
    the activation module after each hidden Linear). Raises if one of them did not run.
    """
    with record_outputs(layers) as outputs:
        model(*inputs)
    missing = [i for i, out in enumerate(outputs) if out is None]
    if missing:
        raise RuntimeError(f"layers {missing} did not run during the forward pass")
    return dormant_ratio([out for out in outputs if out is not None], tau)
