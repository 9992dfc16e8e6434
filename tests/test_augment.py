"""RandomShiftsAug against hand-computed integer crops of a replicate-padded image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.augment import RandomShiftsAug

torch.set_num_threads(1)
# grid_sample samples (nearly) exact pixel centres: float32 rounding leaves < 4e-3 on the 0..255 scale.
TOL = 1e-2


def expected_shift(img: np.ndarray, dx: int, dy: int, pad: int) -> np.ndarray:
    """Output pixel (y, x) = input pixel (y + dy - pad, x + dx - pad), clamped to the image."""
    _, h, w = img.shape
    rows = np.clip(np.arange(h) + dy - pad, 0, h - 1)
    cols = np.clip(np.arange(w) + dx - pad, 0, w - 1)
    return img[:, rows][:, :, cols]


def test_every_forced_shift_equals_the_padded_crop() -> None:
    rng = np.random.default_rng(0)
    pad, n = 2, 25
    img = rng.integers(0, 256, size=(n, 6, 10, 14), dtype=np.uint8)  # non-square on purpose
    shifts = np.array([(dx, dy) for dx in range(2 * pad + 1) for dy in range(2 * pad + 1)])
    out = RandomShiftsAug(pad)(torch.from_numpy(img), shift=torch.from_numpy(shifts))
    assert out.shape == img.shape and out.dtype == torch.float32
    for i, (dx, dy) in enumerate(shifts):
        # all 6 channels (2 stacked RGB frames) of item i share its shift
        np.testing.assert_allclose(out[i].numpy(), expected_shift(img[i], dx, dy, pad), atol=TOL, rtol=0)


def test_real_size_corner_shifts_replicate_the_border() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(3, 9, 84, 84), dtype=np.uint8)
    shifts = torch.tensor([[0, 0], [8, 8], [4, 4]])
    out = RandomShiftsAug(4)(torch.from_numpy(img), shift=shifts).numpy()
    # shift (0, 0): the top-left 5x5 block is all the original top-left pixel
    np.testing.assert_allclose(out[0, :, :5, :5], np.broadcast_to(img[0, :, :1, :1], (9, 5, 5)), atol=TOL)
    # shift (8, 8): the last 5 rows repeat the original last row, moved left by 4 ...
    np.testing.assert_allclose(out[1, :, -5:, :-4], np.broadcast_to(img[1, :, -1:, 4:], (9, 5, 80)), atol=TOL)
    # ... and the last 4 columns of those rows are the bottom-right pixel
    np.testing.assert_allclose(out[1, :, -5:, -4:], np.broadcast_to(img[1, :, -1:, -1:], (9, 5, 4)), atol=TOL)
    # shift (pad, pad) is the identity
    np.testing.assert_allclose(out[2], img[2], atol=TOL)
    for i in range(3):
        dx, dy = shifts[i].tolist()
        np.testing.assert_allclose(out[i], expected_shift(img[i], dx, dy, 4), atol=TOL)


def index_image(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """Pixel value y * w + x + 1000 * channel, so the shift can be read back from the output."""
    base = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    chans = torch.stack([base + 1000.0 * k for k in range(c)])
    return chans.expand(n, c, h, w).clone()


def test_random_shifts_are_per_item_shared_across_channels_and_in_range() -> None:
    torch.manual_seed(0)
    n, c, h, w, pad = 64, 9, 20, 20, 4
    out = RandomShiftsAug(pad)(index_image(n, c, h, w))
    centre = out[:, :, h // 2, w // 2].round() - 1000.0 * torch.arange(c)  # (n, c)
    assert torch.equal(centre, centre[:, :1].expand(n, c))  # same shift for every stacked frame
    dy = (centre[:, 0] // w).long() - h // 2 + pad
    dx = (centre[:, 0] % w).long() - w // 2 + pad
    assert dx.min() >= 0 and dx.max() <= 2 * pad and dy.min() >= 0 and dy.max() <= 2 * pad
    assert len(set(zip(dx.tolist(), dy.tolist(), strict=True))) > 10  # items get different shifts
    for i in range(n):  # and each item is exactly the crop for its recovered shift
        img = index_image(1, c, h, w)[0].numpy()
        np.testing.assert_allclose(
            out[i].numpy(), expected_shift(img, dx[i].item(), dy[i].item(), pad), atol=TOL
        )


def test_shift_distribution_covers_all_offsets_and_follows_the_seed() -> None:
    aug = RandomShiftsAug(4)
    torch.manual_seed(5)
    shifts = aug.sample_shift(5000)
    assert shifts.shape == (5000, 2)
    for axis in range(2):
        counts = torch.bincount(shifts[:, axis], minlength=9)
        assert counts.numel() == 9 and counts.min() > 400  # uniform over 0..8 (mean 555)
    x = torch.rand(4, 3, 12, 12) * 255
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    assert torch.equal(a, aug(x))


def test_zero_pad_is_identity_and_bad_pad_rejected() -> None:
    x = torch.rand(2, 3, 7, 7) * 255
    torch.testing.assert_close(RandomShiftsAug(0)(x), x, atol=TOL, rtol=0)
    with pytest.raises(ValueError):
        RandomShiftsAug(-1)
