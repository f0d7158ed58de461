"""HistoryTable's local store, without a broker: what it writes (and what changelog recovery restores,
keyed by bytes) is what a user's next lookup finds once the cache is gone."""

from __future__ import annotations

import faust
import pytest
from prometheus_client import CollectorRegistry, Counter

from ecseq.decoding import Event, EventSchema
from ecseq.history import UserHistory
from worker import internals
from worker.state import HistoryTable

SCHEMA = EventSchema(("amount",), ("channel",))


def _history(user: str, n: int) -> UserHistory:
    history = UserHistory.empty(SCHEMA)
    for i in range(n):
        history.append(Event(f"{user}-{i}", user, float(i), (float(i),), ("web",)), 10)
    return history


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_written_or_recovered_history_is_found_once_the_cache_is_gone(store, tmp_path):
    internals.changelog_instead_of_wal()
    app = faust.App(f"t-seq-{store[:3]}", store=store, datadir=str(tmp_path), broker="kafka://127.0.0.1:1")
    table = _table(app)
    written = _history("u1", 3)
    table._store(2, [(b"u1", written.to_bytes())])
    restored = _history("u2", 2)  # what changelog recovery puts in the store: the record's raw key
    table.table.data.apply_changelog_batch([_Changelog(3, b"u2", restored.to_bytes())], lambda k: k, lambda v: v)
    table._cache.clear()  # as after a rebalance

    assert table.history("u1", SCHEMA).to_bytes() == written.to_bytes()
    assert table.history("u2", SCHEMA).to_bytes() == restored.to_bytes()
    assert len(table.history("u3", SCHEMA)) == 0  # an unknown user starts empty


def _table(app: faust.App, cache_bytes: int = 1 << 20, max_state_bytes: int = 1 << 20) -> HistoryTable:
    return HistoryTable(app, 4, cache_bytes, max_state_bytes, Counter("trimmed", "", registry=CollectorRegistry()))


def _trimmed(table: HistoryTable) -> float:
    return next(s.value for s in table.trimmed.collect()[0].samples if s.name == "trimmed_total")


def test_a_history_over_the_byte_limit_is_stored_without_its_oldest_events(tmp_path):
    app = faust.App("t-seq-limit", store="memory://", datadir=str(tmp_path), broker="kafka://127.0.0.1:1")
    table = _table(app, max_state_bytes=4000)
    history = UserHistory.empty(SCHEMA)
    for i in range(10):  # ~500 bytes an event: long ids and a new long category each time
        history.append(Event(f"{i}-" + "e" * 250, "u1", float(i), (1.0,), (f"{i}-" + "c" * 250,)), 10)
    assert len(history.to_bytes()) > 4000
    stored, value = table._within_limit("u1", history)
    assert len(value) <= 4000 and value == stored.to_bytes() and 1 <= len(stored) < 10
    assert stored.event_ids == history.event_ids[-len(stored):]  # the newest kept, in order
    assert len(history) == 10  # the history being scored is not changed
    assert _trimmed(table) == 1
    small = _history("u2", 3)
    assert table._within_limit("u2", small) == (small, small.to_bytes()) and _trimmed(table) == 1


def test_the_cache_is_bounded_by_stored_bytes_least_recently_seen_out(tmp_path):
    app = faust.App("t-seq-cache", store="memory://", datadir=str(tmp_path), broker="kafka://127.0.0.1:1")
    table = _table(app, cache_bytes=1000)
    for user in ("a", "b", "c"):
        table._remember(user, _history(user, 1), 400)
    assert list(table._cache) == ["b", "c"] and table._cached_bytes == 800
    table.history("b", SCHEMA)  # seen again: now the most recent
    table._remember("d", _history("d", 1), 400)
    assert list(table._cache) == ["b", "d"]
    table._remember("b", _history("b", 2), 100)  # rewritten: its old size leaves the count
    assert table._cached_bytes == 500


class _Changelog:
    """A changelog record as Faust's recovery hands it to a store (the memory store reads the event's
    key and value, RocksDB the message's)."""

    def __init__(self, partition: int, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value
        self.message = _RecoveredMessage(partition, key, value)


class _RecoveredMessage:
    def __init__(self, partition: int, key: bytes, value: bytes) -> None:
        self.partition, self.key, self.value, self.offset = partition, key, value, 0
        self.tp = faust.types.TP("t-seq-sequences-changelog", partition)
