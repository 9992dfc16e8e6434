"""Shared networks, weight init, soft update, TruncatedNormal and the precision switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.distributions import TruncatedNormal
from common.errors import ConfigError
from common.networks import PixelEncoder, Trunk, TwinQ, conv_out_size, mlp, orthogonal_init_, soft_update_
from common.precision import autocast

torch.set_num_threads(1)


# --- PixelEncoder -----------------------------------------------------------------------------------
def test_encoder_output_is_32x35x35_for_84x84() -> None:
    enc = PixelEncoder((9, 84, 84))
    assert enc.out_shape == (32, 35, 35)
    assert enc.repr_dim == 32 * 35 * 35 == 39200
    out = enc(torch.randint(0, 256, (2, 9, 84, 84), dtype=torch.uint8))
    assert out.shape == (2, 39200) and out.dtype == torch.float32


def test_encoder_layers_and_repr_dim_follow_the_input_shape() -> None:
    enc = PixelEncoder((3, 20, 30))
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)
    # 20 -> 9 -> 7 -> 5 -> 3 and 30 -> 14 -> 12 -> 10 -> 8
    assert enc.out_shape == (32, 3, 8) and enc.repr_dim == 32 * 3 * 8
    assert enc(torch.zeros(1, 3, 20, 30)).shape == (1, enc.repr_dim)
    assert conv_out_size(84, 3, 2) == 41
    with pytest.raises(ValueError):
        PixelEncoder((3, 8, 8))  # 8 -> 3 -> 1 -> vanishes


def test_encoder_scales_pixels_to_minus_half_plus_half() -> None:
    enc = PixelEncoder((9, 16, 16))
    # Biases are zero at init: a mid-grey image (127.5 -> 0) gives exactly zero features.
    assert torch.equal(enc(torch.full((1, 9, 16, 16), 127.5)), torch.zeros(1, enc.repr_dim))
    x = torch.randint(0, 256, (2, 9, 16, 16), dtype=torch.uint8)
    expected = enc.convnet(x.float() / 255.0 - 0.5).flatten(1)
    torch.testing.assert_close(enc(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(enc(x), enc(x.float()), rtol=0, atol=0)


# --- orthogonal_init_ ---------------------------------------------------------------------------------
def test_orthogonal_init_linear_conv_and_untouched_layernorm() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(9, 32, 3), nn.Linear(64, 16), nn.Linear(8, 40), nn.LayerNorm(5))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    net.apply(orthogonal_init_)
    conv, wide, tall, ln = net
    w = conv.weight.reshape(32, -1)  # 32 x 81: orthogonal rows with ReLU gain sqrt(2)
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(wide.weight @ wide.weight.T, torch.eye(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(tall.weight.T @ tall.weight, torch.eye(8), atol=1e-5, rtol=0)
    for layer in (conv, wide, tall):
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.all(ln.weight == 3.0) and torch.all(ln.bias == 3.0)  # not an init target


# --- soft_update_ ----------------------------------------------------------------------------------
def test_soft_update_math() -> None:
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(1.0)
        for p in target.parameters():
            p.fill_(0.0)
    soft_update_(target, source, 0.25)
    assert all(torch.allclose(p, torch.full_like(p, 0.25)) for p in target.parameters())
    soft_update_(target, source, 0.25)  # 0.25 + 0.75 * 0.25
    assert all(torch.allclose(p, torch.full_like(p, 0.4375)) for p in target.parameters())
    soft_update_(target, source, 0.0)
    assert all(torch.allclose(p, torch.full_like(p, 0.4375)) for p in target.parameters())
    soft_update_(target, source, 1.0)
    assert all(torch.equal(t, s) for t, s in zip(target.parameters(), source.parameters(), strict=True))
    assert all(p.grad is None for p in target.parameters())
    with pytest.raises(ValueError):
        soft_update_(target, source, 1.5)


def test_soft_update_random_params_against_formula() -> None:
    torch.manual_seed(1)
    source, target = mlp(4, [5], 2), mlp(4, [5], 2)
    before = [p.clone() for p in target.parameters()]
    soft_update_(target, source, 0.01)
    for t, s, b in zip(target.parameters(), source.parameters(), before, strict=True):
        torch.testing.assert_close(t, 0.01 * s + 0.99 * b, atol=1e-7, rtol=0)


# --- mlp, Trunk, TwinQ -------------------------------------------------------------------------------
def test_mlp_structure() -> None:
    net = mlp(6, [16, 16], 3)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert not any(getattr(m, "inplace", False) for m in net)
    assert net(torch.zeros(4, 6)).shape == (4, 3)
    variant = mlp(6, [16], 1, dropout=0.01, layer_norm=True, output_activation=nn.Tanh)
    assert [type(m) for m in variant] == [nn.Linear, nn.Dropout, nn.LayerNorm, nn.ReLU, nn.Linear, nn.Tanh]


def test_trunk_is_linear_layernorm_tanh() -> None:
    trunk = Trunk(100, 8)
    assert [type(m) for m in trunk] == [nn.Linear, nn.LayerNorm, nn.Tanh]
    out = trunk(torch.randn(5, 100) * 100)
    assert out.shape == (5, 8) and out.abs().max() <= 1.0


def test_twin_q_shapes_and_independent_heads() -> None:
    torch.manual_seed(0)
    q = TwinQ(feature_dim=8, action_dim=3, hidden_dims=[16, 16])
    q.apply(orthogonal_init_)
    h, a = torch.randn(4, 8), torch.rand(4, 3) * 2 - 1
    q1, q2 = q(h, a)
    assert q1.shape == (4, 1) and q2.shape == (4, 1)
    assert q.q1[0].in_features == 11 and not torch.allclose(q1, q2)
    # concat order is (h, a): the head equals its MLP on torch.cat([h, a]).
    torch.testing.assert_close(q1, q.q1(torch.cat([h, a], dim=-1)))
    (q1.sum() + q2.sum()).backward()
    assert all(p.grad is not None for p in q.parameters())


# --- TruncatedNormal -------------------------------------------------------------------------------
def test_truncated_normal_clamps_with_straight_through_gradient() -> None:
    torch.manual_seed(0)
    loc = torch.full((2000,), 0.95, requires_grad=True)
    dist = TruncatedNormal(loc, torch.full((2000,), 1.0))
    x = dist.sample()
    assert x.max() <= 1 - 1e-6 and x.min() >= -1 + 1e-6
    assert (x == torch.tensor(1 - 1e-6)).any()  # some samples were clamped ...
    x.sum().backward()
    assert torch.equal(loc.grad, torch.ones(2000))  # ... yet every sample passes gradient 1 to loc


def test_truncated_normal_clip_limits_the_noise() -> None:
    torch.manual_seed(0)
    dist = TruncatedNormal(torch.zeros(4, 1000), torch.full((4, 1000), 10.0))
    x = dist.sample(clip=0.3)
    assert x.abs().max() <= 0.3 + 1e-7
    assert (x.abs() > 0.299).float().mean() > 0.9  # a huge scale puts nearly all noise at the clip
    assert dist.sample(sample_shape=torch.Size([3])).shape == (3, 4, 1000)
    assert torch.equal(dist.mean, torch.zeros(4, 1000))


def test_truncated_normal_sample_matches_formula() -> None:
    loc, scale = torch.tensor([0.2, -0.5, 0.9]), torch.tensor([0.1, 0.5, 2.0])
    torch.manual_seed(3)
    x = TruncatedNormal(loc, scale).sample(clip=0.4)
    torch.manual_seed(3)
    noise = torch.randn(3) * scale
    expected = (loc + noise.clamp(-0.4, 0.4)).clamp(-1 + 1e-6, 1 - 1e-6)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)


# --- precision ---------------------------------------------------------------------------------------
def test_autocast_fp32_bf16_and_errors() -> None:
    lin, x, cpu = nn.Linear(4, 4), torch.randn(2, 4), torch.device("cpu")
    with autocast(cpu, "fp32"):
        assert lin(x).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert lin(x).dtype == torch.bfloat16
    assert lin(x).dtype == torch.float32
    with pytest.raises(ConfigError, match="fp16"), autocast(cpu, "fp16"):
        pass
