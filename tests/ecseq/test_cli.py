"""`ecseq` command line: user mistakes exit 2 with a single `ecseq: error:` line, no traceback.

Only input errors here: each is caught before any model is trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecseq_cli import main


def _events(users: int = 6, per_user: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = users * per_user
    label = rng.integers(0, 2, n).astype(float)
    label[::4] = np.nan  # context-only events
    return pd.DataFrame({
        "user_id": np.repeat([f"u{i}" for i in range(users)], per_user),
        "ts": np.tile(np.arange(per_user), users) + np.repeat(np.arange(users), per_user) * 0.1,
        "label": label,
        "amount": rng.lognormal(size=n).round(2),
        "channel": rng.choice(["web", "app"], n),
    })


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "events.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _run(capsys, *args: str) -> str:
    """Run the CLI expecting a user error; return the error message."""
    code = main(["evaluate", "--quiet", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if line.startswith("ecseq: error:")]
    assert len(errors) == 1, err
    assert err.endswith(errors[0] + "\n")  # the error is the last thing said, on one line
    return errors[0]


def test_missing_events_file(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    message = _run(capsys, "--events", str(missing), "--out", str(tmp_path / "out"))
    assert "not found" in message and "nope.csv" in message
    assert not (tmp_path / "out").exists()


def test_empty_events_file(tmp_path, capsys):
    path = tmp_path / "events.csv"
    path.write_text("")
    message = _run(capsys, "--events", str(path), "--out", str(tmp_path / "out"))
    assert str(path) in message


def test_events_file_without_label_column(tmp_path, capsys):
    path = _write(tmp_path, _events().drop(columns="label"))
    message = _run(capsys, "--events", str(path), "--out", str(tmp_path / "out"))
    assert "label" in message and str(path) in message


def test_bad_split_file_path(tmp_path, capsys):
    path = _write(tmp_path, _events())
    message = _run(capsys, "--events", str(path), "--split-file", str(tmp_path / "splits.csv"),
                   "--out", str(tmp_path / "out"))
    assert "split file" in message and "splits.csv" in message


def test_unknown_categorical_column(tmp_path, capsys):
    path = _write(tmp_path, _events())
    message = _run(capsys, "--events", str(path), "--categorical", "channel,colour", "--out", str(tmp_path / "out"))
    assert "colour" in message


def test_label_value_other_than_zero_or_one(tmp_path, capsys):
    frame = _events()
    frame["label"] = frame["label"].map(lambda v: "" if np.isnan(v) else str(int(v)))  # as text: 0, 1, ""
    frame.loc[7, "label"] = "7"
    path = _write(tmp_path, frame)
    message = _run(capsys, "--events", str(path), "--out", str(tmp_path / "out"))
    assert "label" in message and "row 8" in message and "'7'" in message


@pytest.mark.parametrize("split", ["time", "user"])
def test_no_positives_in_training(tmp_path, capsys, split):
    frame = _events()
    frame["label"] = frame["label"].where(frame["label"].isna(), 0.0)
    path = _write(tmp_path, frame)
    message = _run(capsys, "--events", str(path), "--split", split, "--out", str(tmp_path / "out"))
    assert "no positive" in message and "train" in message


def test_bad_numeric_option(tmp_path, capsys):
    path = _write(tmp_path, _events())
    message = _run(capsys, "--events", str(path), "--epsilon", "2", "--out", str(tmp_path / "out"))
    assert "epsilon" in message
