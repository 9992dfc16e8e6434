"""The diffusion upsampler (common/buffers/diffusion/, common/networks/denoiser.py) vs hand values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from common.buffers.base import Batch
from common.buffers.diffusion import (
    EDM,
    EMA,
    DiffusionConfig,
    MixedReplay,
    MujocoDynamicsCheck,
    StandardNormalizer,
    SyntheticBuffer,
    TransitionLayout,
    TransitionUpsampler,
    quality_report,
)
from common.errors import ConfigError
from common.networks.denoiser import ResidualMLPDenoiser

CFG = DiffusionConfig()


class Recorder(nn.Module):
    """F = `value` everywhere; remembers the inputs the preconditioning gave it."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        self.x, self.noise = x, noise
        return torch.full_like(x, self.value)


# sigma -> (c_skip, c_out, c_in, c_noise) with sigma_data = 1, computed by hand:
# c_skip = 1/(s^2+1), c_out = s/sqrt(s^2+1), c_in = 1/sqrt(s^2+1), c_noise = ln(s)/4
HAND = {
    0.002: (0.999996000016, 0.001999996000, 0.999998000006, -1.553652),
    0.5: (0.8, 0.447213595, 0.894427191, -0.173286795),
    1.0: (0.5, 0.707106781, 0.707106781, 0.0),
    80.0: (1.0 / 6401.0, 0.999921884, 0.012499024, 1.095502),
}


@pytest.mark.parametrize("sigma", sorted(HAND))
def test_edm_preconditioning_matches_hand_values(sigma: float) -> None:
    c_skip, c_out, c_in, c_noise = HAND[sigma]
    edm, x = EDM(CFG), torch.tensor([[2.0, -3.0]])
    net = Recorder(value=1.0)
    d = edm.denoise(net, x, torch.full((1, 1), sigma))
    torch.testing.assert_close(net.x, x * c_in, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(net.noise, torch.full((1, 1), c_noise), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d, c_skip * x + c_out * 1.0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("sigma", "weight"), [(0.5, 5.0), (1.0, 2.0), (2.0, 1.25), (0.1, 101.0)])
def test_loss_weight_is_edm_lambda_and_cancels_c_out(sigma: float, weight: float) -> None:
    edm = EDM(CFG)
    lam = edm.loss_weight(torch.tensor(sigma))
    assert lam.item() == pytest.approx(weight)  # (s^2 + 1) / s^2
    c_out = sigma / math.sqrt(sigma**2 + 1)
    assert (lam * c_out**2).item() == pytest.approx(1.0)  # EDM: unit effective weight on F's target


def test_training_loss_with_a_zero_network_is_the_weighted_skip_error() -> None:
    # F = 0 gives D = c_skip (x + s n); with x = 0: loss = lambda(s) c_skip^2 s^2 mean(n^2) per sample.
    edm = EDM(CFG)
    torch.manual_seed(0)
    loss = edm.training_loss(Recorder(0.0), torch.zeros(4096, 3))
    torch.manual_seed(0)
    sigma = (-1.2 + 1.2 * torch.randn(4096, 1)).exp()
    n = torch.randn(4096, 3)
    expected = (
        (sigma**2 + 1) / sigma**2 * (sigma / (sigma**2 + 1)) ** 2 * n.pow(2).mean(1, keepdim=True)
    ).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_karras_schedule_endpoints_and_formula() -> None:
    sig = EDM(CFG).sigmas(5)
    assert sig.shape == (6,) and sig[-1] == 0.0
    a, b = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
    want = [(a + i / 4 * (b - a)) ** 7 for i in range(5)]
    np.testing.assert_allclose(sig[:-1].numpy(), want, rtol=1e-5)
    assert sig[0].item() == pytest.approx(80.0) and sig[4].item() == pytest.approx(0.002)


class GaussianOracle(nn.Module):
    """The exact F of data ~ N(mean, std^2) per dim: D(x, s) = mean + std^2/(std^2 + s^2) (x - mean)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)

    def forward(self, x_in: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sigma = (4 * noise).exp()  # c_noise = ln(s)/4
        x = x_in * (sigma**2 + 1).sqrt()  # undo c_in
        d = self.mean + self.std**2 / (self.std**2 + sigma**2) * (x - self.mean)
        c_skip, c_out = 1 / (sigma**2 + 1), sigma / (sigma**2 + 1).sqrt()
        return (d - c_skip * x) / c_out


@pytest.mark.parametrize(
    ("sampler", "steps", "std_rtol"), [("heun", 128, 0.03), ("heun", 64, 0.05), ("dpm", 40, 0.04)]
)
def test_samplers_recover_a_known_gaussian_with_the_exact_denoiser(
    sampler: str, steps: int, std_rtol: float
) -> None:
    # Measured (seed 0, 20k samples): std error heun-128 1%, heun-64 3%, dpm-40 1%; heun-32 6%, dpm-20 5%.
    torch.manual_seed(0)
    edm = EDM(dataclasses.replace(CFG, sample_steps=steps))
    net = GaussianOracle([1.0, -2.0], [0.5, 2.0])
    draw = edm.sample_heun if sampler == "heun" else edm.sample_dpm
    x = draw(net, 20000, 2, torch.device("cpu"))
    np.testing.assert_allclose(x.mean(0).numpy(), [1.0, -2.0], atol=4 * 2.0 / math.sqrt(20000))  # 4 s.e.
    np.testing.assert_allclose(x.std(0).numpy(), [0.5, 2.0], rtol=std_rtol)


def test_heun_applies_churn_before_evaluating_the_model() -> None:
    # With churn, the model must see sigma_hat = sigma (1 + gamma), gamma = min(80/N, sqrt(2) - 1), inside
    # [S_tmin, S_tmax] and sigma itself outside; sigma_max = 80 > S_tmax gets no churn.
    seen: list[float] = []

    class Spy(GaussianOracle):
        def forward(self, x_in: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
            seen.append(float((4 * noise[0, 0]).exp()))
            return super().forward(x_in, noise)

    steps = 16
    edm = EDM(dataclasses.replace(CFG, sample_steps=steps))
    edm.sample_heun(Spy([0.0], [1.0]), 4, 1, torch.device("cpu"))
    sig, gamma = edm.sigmas(steps).tolist(), min(80 / steps, math.sqrt(2) - 1)
    first_evals = seen[0::2][: steps - 1] + [seen[-1]]  # the Euler evaluation of each step
    for s, got in zip(sig[:-1], first_evals, strict=True):
        want = s * (1 + gamma) if 0.05 <= s <= 50 else s
        assert got == pytest.approx(want, rel=1e-4)
    assert len(seen) == 2 * steps - 1  # Heun: two evaluations per step, the last step (to 0) Euler only


def test_ema_warmup_schedule() -> None:
    net = nn.Linear(1, 1, bias=False)
    ema = EMA(net, beta=0.995, every=10, after=100, power=2 / 3)
    for _ in range(100):
        ema.update(net)
    assert ema.decay() == 0.0  # calls = 100: t = -1
    ema.calls = 109
    assert ema.decay() == pytest.approx(1 - 9.0 ** (-2 / 3))  # t = 8
    ema.calls = 10_000
    assert ema.decay() == 0.995
    # an update: ema <- decay ema + (1 - decay) w, at every 10th call only
    ema = EMA(net, beta=0.995, every=10, after=0, power=2 / 3)
    with torch.no_grad():
        ema.model.weight.fill_(0.0)
        net.weight.fill_(1.0)
    ema.calls = 18
    ema.update(net)  # call 19: skipped
    assert ema.model.weight.item() == 0.0
    ema.update(net)  # call 20: t = 19
    assert ema.model.weight.item() == pytest.approx(1 - (1 - 20.0 ** (-2 / 3)))


def test_normalizer_round_trip_leaves_skipped_dims_alone() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal([3.0, -1.0, 0.0, 5.0], [2.0, 0.1, 1.0, 4.0], size=(5000, 4)).astype(np.float32)
    x[:, 2] = rng.random(5000) < 0.1  # a done column
    norm = StandardNormalizer(x, skip_dims=(2,))
    z = norm.normalize(x)
    np.testing.assert_array_equal(z[:, 2], x[:, 2])
    np.testing.assert_allclose(z[:, [0, 1, 3]].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(0), 1.0, atol=1e-3)
    np.testing.assert_allclose(norm.unnormalize(z), x, rtol=1e-5, atol=1e-5)


def test_layout_flatten_split_round_trip() -> None:
    layout = TransitionLayout(obs_dim=2, action_dim=1, terminals=True)
    t = {
        "observations": np.array([[1.0, 2.0]]),
        "actions": np.array([[3.0]]),
        "rewards": np.array([4.0]),
        "next_observations": np.array([[5.0, 6.0]]),
        "terminations": np.array([True]),
    }
    x = layout.flatten(t)
    np.testing.assert_array_equal(x, [[1, 2, 3, 4, 5, 6, 1]])
    assert layout.dim == 7 and layout.reward_index == 3
    back = layout.split(x)
    for k in t:
        np.testing.assert_array_equal(back[k], np.asarray(t[k], np.float32))


def test_terminal_threshold_and_action_clipping() -> None:
    up = TransitionUpsampler(CFG, obs_dim=1, action_dim=3)
    raw = {
        "observations": np.zeros((2, 1)),
        "actions": np.array([[-1.5, 0.3, 2.0], [1.0, -1.0, 0.0]], np.float32),
        "rewards": np.zeros(2),
        "next_observations": np.zeros((2, 1)),
        "terminations": np.array([0.5, 0.51]),
    }
    out = up.postprocess(raw)
    np.testing.assert_array_equal(out["actions"], np.float32([[-1.0, 0.3, 1.0], [1.0, -1.0, 0.0]]))
    np.testing.assert_array_equal(out["terminations"], [False, True])  # > 0.5
    assert up.last_action_out_of_bounds == pytest.approx(2 / 6)
    kept = TransitionUpsampler(dataclasses.replace(CFG, clip_actions=False), 1, 3).postprocess(raw)
    np.testing.assert_array_equal(kept["actions"], raw["actions"])


def _mixture(n: int, seed: int) -> dict[str, np.ndarray]:
    """Two modes: s ~ +-1.5, a ~ +-0.5 with the same sign, r = s + a, s' = 0.5 s; done when s > 0 (1/2)."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=n)
    s = 1.5 * sign + 0.2 * rng.normal(size=n)
    a = 0.5 * sign + 0.1 * rng.normal(size=n)
    return {
        "observations": s[:, None],
        "actions": a[:, None],
        "rewards": s + a,
        "next_observations": 0.5 * s[:, None],
        "terminations": sign > 0,
    }


def test_short_fit_recovers_a_bimodal_distribution_and_its_moments() -> None:
    cfg = dataclasses.replace(CFG, width=128, num_blocks=2, dim_t=64, train_steps=1500, sample_steps=32)
    real = _mixture(4000, seed=0)
    up = TransitionUpsampler(cfg, obs_dim=1, action_dim=1, seed=0)
    up.fit(real)
    assert up.layout is not None and up.layout.terminals  # the data hold terminals: a done dim
    syn = up.sample(4000)
    report = quality_report(real, syn, up.last_action_out_of_bounds)
    assert report["mean_abs_z"] < 0.1 and report["std_log_ratio"] < 0.15, report
    s, a = syn["observations"][:, 0], syn["actions"][:, 0]
    assert 0.4 < np.mean(s > 0) < 0.6  # both modes
    assert np.mean(np.sign(s) == np.sign(a)) > 0.9  # the joint structure, not just marginals
    assert np.mean(syn["terminations"] == (s > 0)) > 0.9  # terminals follow the mode
    assert np.mean(np.abs(syn["next_observations"][:, 0] - 0.5 * s) < 0.2) > 0.95  # s' = s / 2


def test_state_dict_round_trip_samples_identically() -> None:
    cfg = dataclasses.replace(CFG, width=32, num_blocks=1, dim_t=16, train_steps=20, sample_steps=4)
    up = TransitionUpsampler(cfg, obs_dim=1, action_dim=1, seed=3)
    up.fit(_mixture(200, seed=1))
    state = up.state_dict()
    other = TransitionUpsampler(cfg, obs_dim=1, action_dim=1, seed=3)
    other.load_state_dict(state)
    a, b = up.sample(50), other.sample(50)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_fit_leaves_the_global_torch_rng_untouched() -> None:
    cfg = dataclasses.replace(CFG, width=16, num_blocks=1, dim_t=16, train_steps=5, sample_steps=3)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    up = TransitionUpsampler(cfg, 1, 1)
    up.fit(_mixture(100, seed=2))
    up.sample(10)
    assert torch.equal(torch.get_rng_state(), before)


class Constant:
    def __init__(self, value: float) -> None:
        self.value = value

    def sample(self, n: int) -> Batch:
        z = np.full((n, 1), self.value, np.float32)
        return Batch(obs=z, action=z, reward=z, discount=np.full((n, 1), 0.99, np.float32), next_obs=z)


@pytest.mark.parametrize(
    ("fraction", "batch", "synthetic"), [(0.5, 256, 128), (0.25, 8, 2), (0.0, 8, 0), (1.0, 4, 4)]
)
def test_mixed_replay_draws_the_configured_fraction(fraction: float, batch: int, synthetic: int) -> None:
    buf = SyntheticBuffer(discount=0.9, seed=0)
    mixed = MixedReplay(Constant(0.0), buf, fraction)
    assert np.all(mixed.sample(batch).obs == 0.0)  # synthetic buffer empty: all real
    n = 100
    buf.refill(
        {
            "observations": np.ones((n, 1)),
            "actions": np.ones((n, 1)),
            "rewards": np.ones(n),
            "next_observations": np.ones((n, 1)),
            "terminations": np.arange(n) % 2 == 0,
        }
    )
    b = mixed.sample(batch)
    assert b.obs.shape == (batch, 1) and int(b.obs.sum()) == synthetic
    syn_discount = b.discount[b.obs[:, 0] == 1.0, 0]
    assert np.all(np.isclose(syn_discount, 0.0) | np.isclose(syn_discount, 0.9))  # gamma (1 - done)
    with pytest.raises(ConfigError):
        MixedReplay(Constant(0.0), buf, 1.5)


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown diffusion setting"):
        DiffusionConfig.from_mapping({"widht": 3})
    with pytest.raises(ConfigError, match="sampler"):
        DiffusionConfig.from_mapping({"sampler": "ddim"})
    assert DiffusionConfig.from_mapping({"betas": [0.9, 0.99]}).betas == (0.9, 0.99)


def test_denoiser_shapes_and_the_fourier_features_are_frozen() -> None:
    net = ResidualMLPDenoiser(dim=7, width=32, num_blocks=2, dim_t=16)
    out = net(torch.randn(5, 7), torch.randn(5, 1))
    assert out.shape == (5, 7)
    names = [n for n, _ in net.named_parameters()]
    assert not any("weights" in n for n in names)  # random Fourier weights are a buffer, never trained
    # width 1024 x 6 blocks, dim_t 256 on a 41-dim transition: about 6.7M parameters (reference estimate)
    big = ResidualMLPDenoiser(dim=41, width=1024, num_blocks=6, dim_t=256)
    assert 6.4e6 < sum(p.numel() for p in big.parameters()) < 7.0e6


def _hopper_transitions(n: int) -> dict[str, np.ndarray]:
    import gymnasium as gym

    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    out: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations")}
    while len(out["rewards"]) < n:
        a = rng.uniform(-1, 1, 3).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        for k, v in zip(out, (obs, a, r, nxt), strict=True):
            out[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    env.close()
    t = {k: np.asarray(v, np.float32) for k, v in out.items()}
    t["terminations"] = np.zeros(n, bool)
    return t


def test_dynamics_check_is_zero_on_real_hopper_transitions_and_positive_on_corrupted_ones() -> None:
    check = MujocoDynamicsCheck("Hopper-v5")
    assert check.supported
    real = _hopper_transitions(60)
    assert check.error(real) < 1e-4
    bad = dict(real, next_observations=real["next_observations"] + 0.1)
    assert check.error(bad) == pytest.approx(0.1, rel=0.05)
    check.close()
    ant = MujocoDynamicsCheck("Ant-v5")  # contact forces in the observation: cannot be set from it
    assert not ant.supported and ant.error(real) is None
    ant.close()
