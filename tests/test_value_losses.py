"""common/value_losses.py against hand-computed values: HL-Gauss, two-hot and C51 targets, the regressions,
the expectation over the support, and the one-line errors of a bad loss configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from common.value_losses import (
    C51Loss,
    HLGaussLoss,
    HuberLoss,
    MSELoss,
    TwoHotLoss,
    check_value_loss,
    make_value_loss,
)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _close(actual: torch.Tensor, expected: object, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), np.asarray(expected, dtype=np.float64), atol=atol)


# Support used below: [0, 4] in 4 bins of width 1 (centres 0.5, 1.5, 2.5, 3.5); sigma = 0.75 x 1.
# HL-Gauss target of y: p_i = [Phi((e_{i+1} - y)/0.75) - Phi((e_i - y)/0.75)]
#                            / [Phi((4 - y)/0.75) - Phi(-y/0.75)],
# with Phi from the error function by hand:
#   y = 2: Phi at -2.667, -1.333, 0, 1.333, 2.667 = .003830, .091211, .5, .908789, .996170;
#          bin masses .087381, .408789, .408789, .087381 (0.992339 inside) -> / 0.992339.
#   y = 0: half the Gaussian lies below v_min; the inside half is renormalised to 1.
HL_GAUSS_AT_2 = [0.088055, 0.411945, 0.411945, 0.088055]
HL_GAUSS_AT_0 = [0.817578, 0.174762, 0.007597, 0.000063]


def test_hl_gauss_target_distribution_matches_the_normal_cdf_by_hand():
    loss = HLGaussLoss(0.0, 4.0, 4, sigma_ratio=0.75)
    assert loss.sigma == pytest.approx(0.75) and loss.num_outputs == 4
    assert loss.locations.tolist() == [0.5, 1.5, 2.5, 3.5]  # bin centres
    probs = loss.probs(_t(2.0, 0.0))
    assert probs[0].tolist() == pytest.approx(HL_GAUSS_AT_2, abs=1e-5)
    assert probs[1].tolist() == pytest.approx(HL_GAUSS_AT_0, abs=1e-5)
    assert probs.sum(-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)  # tail mass renormalised away
    # a target outside the support is clipped to its edge first
    _close(loss.probs(_t(-7.0)), [HL_GAUSS_AT_0], atol=1e-5)


def test_hl_gauss_sigma_scales_with_the_bin_width_and_the_expectation_recovers_interior_targets():
    loss = HLGaussLoss(-10.0, 10.0, 101, sigma_ratio=0.75)
    assert loss.sigma == pytest.approx(0.75 * 20 / 101)
    y = _t(-3.3, 0.0, 2.71, 7.5)
    assert loss.value(loss.probs(y).log()).tolist() == pytest.approx(y.tolist(), abs=1e-4)
    # symmetric about the centre of the support: exact there even with 4 bins
    small = HLGaussLoss(0.0, 4.0, 4, sigma_ratio=0.75)
    assert float(small.value(small.probs(_t(2.0)).log())) == pytest.approx(2.0, abs=1e-6)


def test_two_hot_splits_between_the_two_nearest_bin_centres():
    loss = TwoHotLoss(0.0, 4.0, 4)  # centres 0.5, 1.5, 2.5, 3.5
    probs = loss.probs(_t(1.75, 0.5, 3.5, -3.0, 9.0, 2.0))
    _close(
        probs,
        [
            [0.0, 0.75, 0.25, 0.0],  # 1.75 = 0.75 x 1.5 + 0.25 x 2.5
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],  # the last centre: all on the last bin
            [1.0, 0.0, 0.0, 0.0],  # clipped to the first centre
            [0.0, 0.0, 0.0, 1.0],
            [0.0, 0.5, 0.5, 0.0],
        ],
    )
    y = _t(0.5, 0.8, 1.75, 2.0, 3.49)
    assert loss.value(loss.probs(y).log()).tolist() == pytest.approx(y.tolist(), abs=1e-5)


def test_c51_projects_a_shifted_and_discounted_distribution_onto_the_atoms():
    loss = C51Loss(0.0, 4.0, 5)  # atoms 0, 1, 2, 3, 4
    assert loss.locations.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    next_probs = _t(0.0, 0.5, 0.5, 0.0, 0.0)
    # r = 0.5, gamma^n = 0.9: atom 1 -> 1.4 (0.6 to atom 1, 0.4 to atom 2), atom 2 -> 2.3 (0.7 / 0.3);
    # mass 0.5 each: [0, 0.3, 0.2 + 0.35, 0.15, 0]
    out = loss.project(_t(0.5), _t(0.9), next_probs[None])
    assert out[0].tolist() == pytest.approx([0.0, 0.3, 0.55, 0.15, 0.0], abs=1e-6)
    assert float(loss.value(out.log())) == pytest.approx(0.5 + 0.9 * 1.5, abs=1e-5)  # E = r + gamma E[Z]
    # a terminal (discount 0) puts everything at r; beyond v_max, everything on the last atom
    terminal = loss.project(_t(2.5, 10.0), _t(0.0, 0.9), torch.stack([next_probs, next_probs]))
    _close(terminal, [[0, 0, 0.5, 0.5, 0], [0, 0, 0, 0, 1]])
    # the target is built from the next logits' softmax
    logits = torch.log(next_probs.clamp(min=1e-12))[None]
    assert loss.target(_t(0.5), _t(0.9), logits)[0].tolist() == pytest.approx(out[0].tolist(), abs=1e-5)


def test_cross_entropy_gradient_is_softmax_minus_target():
    loss = HLGaussLoss(0.0, 4.0, 4, sigma_ratio=0.75)
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5]], requires_grad=True)
    loss.loss(logits, _t(2.0)).sum().backward()
    expected = logits.detach().softmax(-1) - torch.tensor([HL_GAUSS_AT_2])
    assert logits.grad is not None
    _close(logits.grad, expected, atol=1e-5)


def test_regression_losses_and_scalar_targets():
    out = torch.tensor([[3.0], [1.5]])
    assert MSELoss().loss(out, _t(1.0, 1.0)).tolist() == pytest.approx([4.0, 0.25])
    assert HuberLoss(1.0).loss(out, _t(1.0, 1.0)).tolist() == pytest.approx([1.5, 0.125])  # |d| - 1/2, d^2/2
    # y = r + discount * Q(s', a*): 1 + 0.9 x 3 and a terminal 2 + 0 x 1.5
    assert MSELoss().target(_t(1.0, 2.0), _t(0.9, 0.0), out).tolist() == pytest.approx([3.7, 2.0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "cross_entropy"}, "is not a value loss; choose one of mse, huber, hl_gauss, two_hot, c51"),
        ({"v_min": 5.0, "v_max": 5.0}, "v_min=5.0 must be below"),
        ({"v_min": 10.0, "v_max": -10.0}, "must be below"),
        ({"num_bins": 1}, "num_bins=1 must be an integer >= 2"),
        ({"sigma_ratio": 0.0}, "sigma_ratio=0.0 must be a positive number"),
    ],
)
def test_bad_loss_settings_are_one_line_config_errors(overrides, message):
    cfg = {
        "loss": "hl_gauss",
        "v_min": -10.0,
        "v_max": 10.0,
        "num_bins": 51,
        "sigma_ratio": 0.75,
        **overrides,
    }
    with pytest.raises(ConfigError, match=message) as info:
        make_value_loss(cfg)
    assert "\n" not in str(info.value)


def test_regressions_ignore_the_support_and_every_loss_builds():
    check_value_loss({"loss": "mse", "v_min": 1.0, "v_max": 0.0, "num_bins": 0})  # unused: no error
    for name, outputs in (("mse", 1), ("huber", 1), ("hl_gauss", 51), ("two_hot", 51), ("c51", 51)):
        cfg = {"loss": name, "v_min": -1.0, "v_max": 1.0, "num_bins": 51, "sigma_ratio": 0.75}
        assert make_value_loss(cfg).num_outputs == outputs
