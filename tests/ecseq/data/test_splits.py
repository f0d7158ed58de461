"""Splits of labelled events: by time, by user, from a file, and the trainability check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecseq.data.events import DataError, EventTable, events_from_frame
from ecseq.data.splits import (
    Split,
    check_trainable,
    read_split_file,
    split_by_time,
    split_by_user,
    split_rows_by_time,
)


def _table(users: int = 20, per_user: int = 10, seed: int = 0) -> EventTable:
    """Random events; every third one is context only, timestamps have many ties."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    label = rng.integers(0, 2, n).astype(float)
    label[::3] = np.nan
    df = pd.DataFrame(
        {
            "user_id": np.repeat([f"u{i}" for i in range(users)], per_user),
            "ts": rng.integers(0, 50, n),
            "label": label,
            "x": rng.normal(size=n),
        }
    )
    return events_from_frame(df)


def _ts(table: EventTable, rows: np.ndarray) -> np.ndarray:
    return table.frame["ts"].to_numpy()[rows]


def _users(table: EventTable, rows: np.ndarray) -> set[str]:
    return set(table.frame["user_id"].to_numpy()[rows])


def _assert_partition(table: EventTable, split: Split) -> None:
    """Parts are ascending int64 labelled rows that together cover each labelled row once."""
    for part in (split.train, split.val, split.test):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    joined = np.sort(np.concatenate([split.train, split.val, split.test]))
    np.testing.assert_array_equal(joined, table.labelled)


def test_split_by_time_orders_parts_and_respects_fractions() -> None:
    table = _table(users=100)
    split = split_by_time(table)
    _assert_partition(table, split)
    assert _ts(table, split.train).max() < _ts(table, split.val).min()
    assert _ts(table, split.val).max() < _ts(table, split.test).min()
    n = len(table.labelled)
    for part, fraction in zip((split.train, split.val, split.test), (0.7, 0.1, 0.2)):
        assert abs(len(part) / n - fraction) < 0.05


def test_split_by_time_without_ties_is_exact() -> None:
    df = pd.DataFrame({"user_id": "u", "ts": np.arange(10), "label": [0, 1] * 5, "x": 0.0})
    split = split_by_time(events_from_frame(df))
    assert (split.train.tolist(), split.val.tolist(), split.test.tolist()) == (
        list(range(7)),
        [7],
        [8, 9],
    )


def test_split_by_time_straddles_a_tie_only_when_unavoidable() -> None:
    df = pd.DataFrame({"user_id": "u", "ts": [5] * 9 + [6], "label": [0, 1] * 5, "x": 0.0})
    split = split_by_time(events_from_frame(df))
    assert min(len(split.train), len(split.val), len(split.test)) > 0


def test_split_by_time_is_deterministic() -> None:
    first, second = split_by_time(_table()), split_by_time(_table())
    for a, b in zip((first.train, first.val, first.test), (second.train, second.val, second.test)):
        np.testing.assert_array_equal(a, b)


def test_split_by_user_keeps_users_whole() -> None:
    table = _table(users=50)
    split = split_by_user(table, seed=3)
    _assert_partition(table, split)
    train, val, test = (_users(table, p) for p in (split.train, split.val, split.test))
    assert not (train & val or train & test or val & test)
    assert (len(train), len(val), len(test)) == (35, 5, 10)


def test_split_by_user_is_seeded() -> None:
    table = _table(users=50)
    same = split_by_user(table, seed=1), split_by_user(table, seed=1)
    np.testing.assert_array_equal(same[0].test, same[1].test)
    assert not np.array_equal(split_by_user(table, seed=2).test, same[0].test)


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (0.8, 0.0, 0.2), (1.2, -0.1, -0.1)]
)
def test_bad_fractions_are_rejected(fractions: tuple[float, ...]) -> None:
    with pytest.raises(DataError, match="fractions"):
        split_by_time(_table(), fractions)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="fractions"):
        split_by_user(_table(), fractions)  # type: ignore[arg-type]


def _write_split(tmp_path: Path, split: Split, table: EventTable) -> Path:
    """Write the user -> part file that reproduces a user split."""
    frames = [
        pd.DataFrame({"user_id": sorted(_users(table, rows)), "split": name})
        for name, rows in (("train", split.train), ("val", split.val), ("test", split.test))
    ]
    path = tmp_path / "split.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_split_file_round_trip(tmp_path: Path) -> None:
    table = _table(users=30)
    split = split_by_user(table, seed=5)
    loaded = read_split_file(table, _write_split(tmp_path, split, table))
    for a, b in zip((split.train, split.val, split.test), (loaded.train, loaded.val, loaded.test)):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.int64


def test_split_file_compares_user_ids_as_text(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"user_id": [7, 7, 8, 9], "ts": [1, 2, 3, 4], "label": [0, 1, 1, 0], "x": 0.0}
    )
    table = events_from_frame(df)
    path = tmp_path / "split.csv"
    path.write_text("user_id,split\n7,train\n8,val\n")
    split = read_split_file(table, path)
    assert (split.train.tolist(), split.val.tolist(), split.test.tolist()) == ([0, 1], [2], [])
    with pytest.raises(DataError, match="test split is empty"):
        check_trainable(table, split)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user,split\nu0,train\n", "user_id"),
        ("user_id,part\nu0,train\n", "split"),
        ("user_id,split\nu0,train\nu1,holdout\n", "'holdout' at row 2"),
        ("user_id,split\nu0,train\nu1,val\nu0,test\n", "'u0' is listed more than once"),
    ],
)
def test_split_file_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "split.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=expected):
        read_split_file(_table(), path)


def test_split_file_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split file not found"):
        read_split_file(_table(), tmp_path / "absent.csv")


def test_split_rows_by_time_keeps_oldest_fraction() -> None:
    table = _table(users=40)
    train = split_by_time(table).train
    old, new = split_rows_by_time(table, train, 0.6)
    np.testing.assert_array_equal(np.sort(np.concatenate([old, new])), train)
    assert _ts(table, old).max() < _ts(table, new).min()
    assert abs(len(old) / len(train) - 0.6) < 0.1
    with pytest.raises(DataError, match="between 0 and 1"):
        split_rows_by_time(table, train, 1.0)


def test_check_trainable_accepts_a_normal_split() -> None:
    table = _table()
    check_trainable(table, split_by_time(table))


def test_check_trainable_errors() -> None:
    df = pd.DataFrame({"user_id": "u", "ts": range(6), "label": [0, 0, 1, 1, 1, 1], "x": 0.0})
    table = events_from_frame(df)
    rows = np.arange(6)
    with pytest.raises(DataError, match="no positive labels in the training split"):
        check_trainable(table, Split(rows[:2], rows[2:4], rows[4:]))
    with pytest.raises(DataError, match="no negative labels in the training split"):
        check_trainable(table, Split(rows[2:4], rows[:2], rows[4:]))
    with pytest.raises(DataError, match="val split is empty"):
        check_trainable(table, Split(rows[1:4], rows[:0], rows[4:]))
    with pytest.raises(DataError, match="test split is empty"):
        check_trainable(table, Split(rows[1:4], rows[4:], rows[:0]))
