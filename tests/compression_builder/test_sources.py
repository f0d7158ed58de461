"""Sources skip bad rows, count them by reason, and keep everything else."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from compression_builder.sources import read_event_file
from ecseq.data.events import DataError


def _frame() -> pd.DataFrame:
    n = 40
    return pd.DataFrame({
        "event_id": [f"e{i}" for i in range(n)],
        "user_id": [f"u{i % 4}" for i in range(n)],
        "ts": np.arange(n, dtype=float) * 3600,
        "label": [i % 2 for i in range(n)],
        "amount": np.linspace(1, 10, n),
        "channel": ["web", "app"] * (n // 2),
    })


def test_file_source_skips_bad_rows_by_reason(tmp_path):
    frame = _frame().astype({"amount": object, "label": object, "ts": object})
    frame.loc[1, "user_id"] = None  # missing field
    frame.loc[2, "ts"] = "yesterday"  # bad timestamp
    frame.loc[3, "label"] = 7  # not 0/1
    frame.loc[4, "amount"] = "lots"  # text in a numeric column
    frame.loc[5, "amount"] = float("inf")  # non-finite
    frame.loc[6, "event_id"] = "e0"  # duplicate id
    frame.loc[7, "amount"] = None  # a missing value is fine
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)

    gathered = read_event_file(path, categorical=("channel",), numeric=["amount"])

    assert dict(gathered.skipped["events"]) == {"missing_field": 1, "bad_timestamp": 1, "bad_label": 1,
                                                "bad_type": 1, "non_finite": 1, "duplicate_event": 1}
    assert len(gathered.table.frame) == 40 - 6
    assert gathered.skipped_total() == 6
    kept = set(gathered.table.frame["event_id"])
    assert "e7" in kept and "e0" in kept and not {"e1", "e2", "e3", "e4", "e5"} & kept


def test_since_keeps_only_the_newest_event_time(tmp_path):
    path = tmp_path / "events.csv"
    _frame().to_csv(path, index=False)
    gathered = read_event_file(path, numeric=["amount"], categorical=("channel",), since=10 * 3600)
    assert gathered.table.frame["ts"].min() == 29 * 3600
    assert len(gathered.table.frame) == 11


def test_missing_feature_column_is_named(tmp_path):
    path = tmp_path / "events.csv"
    _frame().drop(columns=["amount"]).to_csv(path, index=False)
    with pytest.raises(DataError, match="lacks feature column.*amount"):
        read_event_file(path, numeric=["amount"], categorical=("channel",))


def test_window_without_labels_is_an_error(tmp_path):
    path = tmp_path / "events.csv"
    _frame().assign(label=np.nan).to_csv(path, index=False)
    with pytest.raises(DataError, match="no labelled events"):
        read_event_file(path, numeric=["amount"], categorical=("channel",))


def test_kafka_events_are_validated_like_the_worker_validates_them(tmp_path):
    """The follower decodes events with the worker's decode_event and counts each refusal under its reason."""
    from compression_builder.collector import Collector
    from compression_builder.window_store import Caps, WindowStore
    from ecseq.decoding import MAX_EVENT_BYTES, EventSchema
    from ecseq.history import UserHistory

    good = {"event_id": 7, "user_id": 3.0, "ts": "2024-01-01T00:00:00Z", "amount": None, "channel": "web"}
    values = [json.dumps(good).encode(), None, b"[1]", b"{x", b" " * (MAX_EVENT_BYTES + 1),
              json.dumps({**good, "event_id": "b", "amount": "lots"}).encode(),
              json.dumps({**good, "event_id": "c", "ts": "someday"}).encode(),
              json.dumps({k: v for k, v in good.items() if k != "channel"}).encode()]
    schema = EventSchema(("amount",), ("channel",))
    store = WindowStore(tmp_path, Caps(10, 10))
    collector = Collector(store, schema, 50, 3_600_000, None)
    collector.events([(value, 1_000) for value in values])
    collector.labels([(json.dumps({"event_id": "7", "user_id": "3", "label": 1}).encode(), 2_000)])
    collector.flush()
    assert {reason: n for (kind, reason), n in store.counts().items() if kind == "events"} == {
        "tombstone": 1, "not_object": 1, "bad_json": 1, "oversize": 1, "bad_type": 1, "bad_timestamp": 1,
        "missing_field": 1}
    [sample] = store.samples()
    [event] = UserHistory.from_bytes(sample.window, schema).events()
    assert (event.event_id, event.user_id, event.ts, event.categorical) == ("7", "3", 1_704_067_200.0, ("web",))
    assert np.isnan(event.numeric[0])
    store.close()
