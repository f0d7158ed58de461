"""SequenceTable's local store, without a broker: what it writes (and what changelog recovery restores,
keyed by bytes) is what a user's next lookup finds once the cache is gone."""

from __future__ import annotations

import faust
import pytest

from ecseq.data.records import Event, EventSchema
from ecseq.history import UserHistory
from worker import faust_compat
from worker.sequences import SequenceTable

SCHEMA = EventSchema(("amount",), ("channel",))


def _history(user: str, n: int) -> UserHistory:
    history = UserHistory.empty(SCHEMA)
    for i in range(n):
        history.append(Event(f"{user}-{i}", user, float(i), (float(i),), ("web",)), 10)
    return history


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_written_or_recovered_history_is_found_once_the_cache_is_gone(store, tmp_path):
    faust_compat.changelog_instead_of_wal()
    app = faust.App(f"t-seq-{store[:3]}", store=store, datadir=str(tmp_path), broker="kafka://127.0.0.1:1")
    table = SequenceTable(app, partitions=4, cache_users=10)
    written = _history("u1", 3)
    table._store(2, [(b"u1", written.to_bytes())])
    restored = _history("u2", 2)  # what changelog recovery puts in the store: the record's raw key
    table.table.data.apply_changelog_batch([_Changelog(3, b"u2", restored.to_bytes())], lambda k: k, lambda v: v)
    table._cache.clear()  # as after a rebalance

    assert table.history("u1", SCHEMA).to_bytes() == written.to_bytes()
    assert table.history("u2", SCHEMA).to_bytes() == restored.to_bytes()
    assert len(table.history("u3", SCHEMA)) == 0  # an unknown user starts empty


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
