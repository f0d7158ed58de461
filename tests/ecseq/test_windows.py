"""SequenceWindows.gather: each row's own user's last L events, left-padded with zero rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecseq.windows import SequenceWindows

# three users with 4, 1 and 3 events; feature row i is [1, i + 1] so rows are recognisable
USER_START = np.array([0, 0, 0, 0, 4, 5, 5, 5])
FEATURES = np.column_stack([np.ones(8), np.arange(1, 9)]).astype(np.float32)


def _windows(length: int) -> SequenceWindows:
    return SequenceWindows.build(FEATURES, USER_START, length)


def _ids(window: torch.Tensor) -> list[int]:
    """Which event each step holds (row index), -1 for padding."""
    return [int(v) - 1 if p else -1 for p, v in window.numpy()]


def test_shape_and_last_step_is_the_row_itself():
    windows = _windows(3)
    assert windows.dim == 2
    rows = np.arange(8)
    out = windows.gather(rows)
    assert out.shape == (8, 3, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, -1], torch.from_numpy(FEATURES))


def test_windows_never_cross_users_and_pad_on_the_left():
    windows = _windows(3)
    expected = {
        0: [-1, -1, 0],
        1: [-1, 0, 1],
        2: [0, 1, 2],
        3: [1, 2, 3],
        4: [-1, -1, 4],  # a one-event user: nothing of the user before it
        5: [-1, -1, 5],
        6: [-1, 5, 6],
        7: [5, 6, 7],
    }
    out = windows.gather(np.arange(8))
    for row, ids in expected.items():
        assert _ids(out[row]) == ids, row
    # padding rows are all-zero (presence column 0 included)
    assert torch.all(out[0, :2] == 0)


def test_window_longer_than_history():
    out = _windows(6).gather(np.array([3, 7, 4]))
    assert _ids(out[0]) == [-1, -1, 0, 1, 2, 3]
    assert _ids(out[1]) == [-1, -1, -1, 5, 6, 7]
    assert _ids(out[2]) == [-1] * 5 + [4]


def test_length_one_and_any_row_order():
    out = _windows(1).gather(np.array([6, 0, 4]))
    assert out.shape == (3, 1, 2)
    assert [_ids(w) for w in out] == [[6], [0], [4]]
    batch = _windows(4).gather(np.array([7, 2]))
    torch.testing.assert_close(batch[0], _windows(4).gather(np.array([7]))[0])
    torch.testing.assert_close(batch[1], _windows(4).gather(np.array([2]))[0])


def test_batches_cover_rows_in_order():
    windows = _windows(2)
    rows = np.array([7, 1, 3, 4, 0])
    parts = list(windows.batches(rows, 2))
    assert [list(p) for p, _ in parts] == [[7, 1], [3, 4], [0]]
    torch.testing.assert_close(torch.cat([w for _, w in parts]), windows.gather(rows))


def test_bad_length_rejected():
    with pytest.raises(ValueError):
        SequenceWindows.build(FEATURES, USER_START, 0)
