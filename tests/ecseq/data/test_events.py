"""The event-table contract: normalisation on good files, one-line DataErrors on bad ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ecseq.data.events import DataError, EventTable, events_from_frame, read_events


def _events() -> pd.DataFrame:
    """Two users, out of order in the file, with a tie on ts for user b."""
    return pd.DataFrame(
        {
            "user_id": ["b", "a", "b", "a", "b"],
            "ts": [30, 20, 10, 10, 10],
            "label": [1, None, 0, 1, None],
            "amount": [1.5, 2.0, np.inf, -np.inf, None],
            "channel": ["web", "app", None, "web", "app"],
        }
    )


def _write_csv(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path_or_frame, **kwargs) -> str:
    """Message of the DataError raised while loading, checked to be one line."""
    with pytest.raises(DataError) as caught:
        if isinstance(path_or_frame, pd.DataFrame):
            events_from_frame(path_or_frame, **kwargs)
        else:
            read_events(path_or_frame, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz", "events.parquet", "events.pq"])
def test_reads_every_supported_format(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith((".parquet", ".pq")):
        _events().to_parquet(path)
    else:
        _events().to_csv(path, index=False)
    table = read_events(path)
    frame = table.frame
    assert list(frame.columns) == ["user_id", "ts", "label", "event_id", "amount", "channel"]
    assert frame["user_id"].tolist() == ["a", "a", "b", "b", "b"]
    assert frame["ts"].tolist() == [10.0, 20.0, 10.0, 10.0, 30.0]
    # Ties on (user, ts) keep file order: file rows 3 then 5 for user b at ts 10.
    expected_ids = ["events-4", "events-2", "events-3", "events-5", "events-1"]
    assert frame["event_id"].tolist() == expected_ids
    assert table.numeric == ("amount",) and table.categorical == ("channel",)
    assert table.user_start.dtype == np.int64
    assert table.user_start.tolist() == [0, 0, 2, 2, 2]
    assert isinstance(frame.index, pd.RangeIndex)


def test_normalised_dtypes_and_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    _events().to_csv(path, index=False)
    frame = read_events(path).frame
    assert frame["ts"].dtype == np.float64 and frame["label"].dtype == np.float64
    assert frame["user_id"].dtype == object and frame["event_id"].dtype == object
    assert frame["amount"].dtype == np.float64
    assert np.isnan(frame["amount"]).tolist() == [True, False, True, True, False]  # inf -> NaN
    assert frame["channel"].dtype == object
    assert frame["channel"].tolist()[:2] == ["web", "app"] and pd.isna(frame["channel"][2])
    assert np.isnan(frame["label"]).sum() == 2


def test_labelled_features_and_describe() -> None:
    table = events_from_frame(_events())
    assert isinstance(table, EventTable)
    assert table.labelled.dtype == np.int64
    assert table.labelled.tolist() == [0, 2, 4]
    assert table.features == ("amount", "channel")
    rate = pytest.approx(2 / 3)
    assert table.describe() == {"users": 2, "events": 5, "labelled": 3, "positive_rate": rate}


def test_iso_timestamps_become_utc_epoch_seconds(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path,
        "user_id,ts,label,x\n"
        "u,2024-01-01T00:00:00Z,1,1\n"
        "u,2024-01-01T03:00:00+02:00,0,2\n"
        "u,2024-01-01 00:00:30,,3\n",
    )
    frame = read_events(path).frame
    base = 1704067200.0
    assert frame["ts"].tolist() == [base, base + 30, base + 3600]


def test_datetime_column_is_accepted() -> None:
    df = _events().assign(ts=pd.to_datetime(["2024-01-01"] * 5) + pd.to_timedelta(range(5), "s"))
    assert events_from_frame(df).frame["ts"].min() == 1704067200.0


def test_given_event_ids_are_kept_as_text(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,event_id,x\n007,1,1,0042,1\n007,2,0,0043,1\n")
    frame = read_events(path).frame
    assert frame["event_id"].tolist() == ["0042", "0043"]
    assert frame["user_id"].tolist() == ["007", "007"]


def test_generated_event_ids_use_source() -> None:
    frame = events_from_frame(_events(), source="train").frame
    assert sorted(frame["event_id"]) == [f"train-{n}" for n in range(1, 6)]


def test_categorical_override_keeps_codes_as_text(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,code,x\nu,1,1,-2,0.5\nu,2,0,0,1\nu,3,,,2\n")
    inferred = read_events(path)
    assert inferred.numeric == ("code", "x") and inferred.categorical == ()
    table = read_events(path, categorical=["code"])
    assert table.numeric == ("x",) and table.categorical == ("code",)
    assert table.frame["code"].tolist()[:2] == ["-2", "0"] and pd.isna(table.frame["code"][2])


def test_categorical_override_on_parquet_drops_float_suffix(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {"user_id": [1, 1, 2], "ts": [1, 2, 3], "label": [1, 0, 1], "code": [-2.0, None, 1.0]}
    ).to_parquet(path)
    table = read_events(path, categorical=["code"])
    assert table.frame["user_id"].tolist() == ["1", "1", "2"]
    assert table.frame["code"].tolist()[0] == "-2" and pd.isna(table.frame["code"][1])


@pytest.mark.parametrize("text", ["True", "true", "1.0", "1"])
def test_label_spellings(tmp_path: Path, text: str) -> None:
    path = _write_csv(tmp_path, f"user_id,ts,label,x\nu,1,{text},1\nu,2,0.0,1\nu,3,,1\n")
    assert read_events(path).frame["label"].tolist()[:2] == [1.0, 0.0]


def test_bool_labels_in_a_frame() -> None:
    df = _events().assign(label=pd.Series([True, None, False, True, None], dtype=object))
    np.testing.assert_array_equal(events_from_frame(df).frame["label"], [1, np.nan, 0, np.nan, 1])


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert str(path) in _error(path) and "not found" in _error(path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\n", name="events.json")
    assert "unsupported" in _error(path) and ".parquet" in _error(path)


def test_corrupt_files_become_one_line(tmp_path: Path) -> None:
    parquet = tmp_path / "events.parquet"
    parquet.write_bytes(b"not a parquet file\nat all\n")
    assert "cannot read" in _error(parquet)
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(b"user_id,ts,label,x\nu,1,1,1\n" * 50)[:40])
    assert "cannot read" in _error(gz)
    ragged = _write_csv(tmp_path, "user_id,ts,label,x\nu,1,1,1\nu,2,0,1,9,9\n")
    assert "cannot read" in _error(ragged)


def test_missing_required_columns_are_all_named(tmp_path: Path) -> None:
    message = _error(_write_csv(tmp_path, "user_id,x\nu,1\n"))
    assert "ts" in message and "label" in message and "missing required" in message


def test_empty_table(tmp_path: Path) -> None:
    assert "empty" in _error(_write_csv(tmp_path, "user_id,ts,label,x\n"))


def test_categorical_must_exist_and_not_be_reserved() -> None:
    assert "'colour'" in _error(_events(), categorical=["colour"])
    message = _error(_events(), categorical=["label"])
    assert "'label'" in message and "reserved" in message


def test_unparseable_ts_names_row_and_value(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,2024-01-01,1,1\nu,yesterday,0,1\n")
    message = _error(path)
    assert "row 2" in message and "'yesterday'" in message and "ts" in message


def test_a_date_outside_the_timestamp_range_is_a_data_error(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,2024-01-01,1,1\nu,0001-01-01,0,1\n")
    message = _error(path)
    assert "row 2" in message and "'0001-01-01'" in message


def test_missing_ts_and_user_count_rows(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,1,1,1\nu,,0,1\nu,,0,1\n")
    message = _error(path)
    assert "ts" in message and "2 row(s)" in message and "row 2" in message
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,1,1,1\n,2,0,1\n")
    message = _error(path)
    assert "user_id" in message and "1 row(s)" in message and "row 2" in message


def test_bad_label_names_row_and_value(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,1,1,1\nu,2,0,1\nu,3,2,1\n")
    message = _error(path)
    assert "label" in message and "row 3" in message and "'2'" in message
    assert "row 1" in _error(_events().assign(label=[0.5, 1, 0, 1, 0]))


def test_duplicate_event_id_is_named(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,event_id,x\nu,1,1,e1,1\nu,2,0,e2,1\nv,3,0,e1,1\n")
    message = _error(path)
    assert "duplicate event_id" in message and "'e1'" in message and "rows 1 and 3" in message


def test_no_feature_columns(tmp_path: Path) -> None:
    assert "no feature columns" in _error(_write_csv(tmp_path, "user_id,ts,label\nu,1,1\n"))


def test_no_labelled_events(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,1,,1\nu,2,,1\n")
    assert "no labelled events" in _error(path)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = _write_csv(tmp_path, "user_id,ts,label,x\nu,1,7,1\n")
    assert _error(path).startswith(str(path))
