"""`OfflineData.concat`: one rule for joining datasets (D4RL medium-expert, SynthER real + synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from common.offline.data import OfflineData, OfflineSampler
from common.offline.minari_io import episode_starts


def _data(lengths: list[int], last_terminal: bool, offset: float = 0.0) -> OfflineData:
    """Episodes of `lengths` rows; all but the last end terminal; the last ends terminal or is cut (no flag),
    as a rollout budget leaves it. Rewards are offset + row index, so every row is recognisable."""
    n = sum(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    terminations = np.zeros(n, bool)
    terminations[np.cumsum(lengths)[:-1] - 1] = True
    terminations[-1] = last_terminal
    obs = np.arange(n, dtype=np.float32)[:, None] + offset
    return OfflineData(
        observations=obs,
        actions=np.zeros((n, 1), np.float32),
        rewards=np.arange(n, dtype=np.float32) + offset,
        next_observations=obs + 0.5,
        terminations=terminations,
        truncations=np.zeros(n, bool),
        episode_starts=starts,
        metadata={"ref_min_score": 0.0, "ref_max_score": 1.0, "split": "medium"},
    )


def test_a_cut_last_episode_ends_as_a_truncation_at_the_seam():
    a, b = _data([2, 3], last_terminal=False), _data([4], last_terminal=True, offset=100.0)
    both = a.concat(b)
    assert len(both) == 9
    np.testing.assert_array_equal(both.rewards, np.concatenate([a.rewards, b.rewards]))
    np.testing.assert_array_equal(both.episode_starts, [0, 2, 5])
    # row 4 (a's last, cut by its budget) now ends its episode as a time limit, not a terminal
    assert both.truncations.tolist() == [False] * 4 + [True] + [False] * 4
    assert both.terminations.tolist() == [False, True, False, False, False, False, False, False, True]
    # the flags and episode_starts agree (write_dataset and every reader rebuild episodes from the flags)
    np.testing.assert_array_equal(episode_starts(both.terminations, both.truncations), both.episode_starts)
    np.testing.assert_allclose(both.episode_returns(), [*a.episode_returns(), *b.episode_returns()])
    # a truncation still bootstraps: the sampler's discount at the seam is gamma, not 0
    sampler = OfflineSampler(both, discount=0.9, seed=0)
    assert sampler.not_done[4, 0] == pytest.approx(0.9) and sampler.not_done[1, 0] == 0.0


def test_a_terminal_last_row_stays_terminal_only():
    a, b = _data([3], last_terminal=True), _data([2], last_terminal=False, offset=10.0)
    both = a.concat(b)
    assert both.terminations[2] and not both.truncations[2]
    np.testing.assert_array_equal(both.episode_starts, [0, 3])


def test_inputs_are_unchanged_and_metadata_is_a_copy():
    a, b = _data([2, 2], last_terminal=False), _data([3], last_terminal=False, offset=50.0)
    before = (a.truncations.copy(), b.truncations.copy(), dict(a.metadata))
    both = a.concat(b)
    both.metadata["ref_max_score"] = 99.0
    both.truncations[:] = True
    np.testing.assert_array_equal(a.truncations, before[0])
    np.testing.assert_array_equal(b.truncations, before[1])
    assert a.metadata == before[2] and both.metadata["split"] == "medium"
    assert both.episode_starts.dtype == np.int64


def test_concat_with_an_empty_side_is_the_other_side():
    a, empty = _data([3], last_terminal=False), _data([1], last_terminal=False)
    empty = OfflineData(
        **{k: getattr(empty, k)[:0] for k in ("observations", "actions", "rewards", "next_observations")},
        terminations=np.zeros(0, bool),
        truncations=np.zeros(0, bool),
        episode_starts=np.zeros(0, np.int64),
    )
    for both in (a.concat(empty), empty.concat(a)):
        np.testing.assert_array_equal(both.rewards, a.rewards)
        np.testing.assert_array_equal(both.truncations, a.truncations)
        np.testing.assert_array_equal(both.episode_starts, a.episode_starts)
