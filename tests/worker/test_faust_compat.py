"""faust_compat: the WAL patch, and the start-up check that refuses other versions or shapes of what it touches."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.stores.rocksdb import RocksDBOptions, Store

from worker import faust_compat


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log"))


def _fill(db) -> None:
    for i in range(200):
        db[f"user-{i}".encode()] = b"x" * 1000


def test_table_partitions_are_written_without_rocksdb_wal(tmp_path):
    # the check can see a write-ahead log: a partition opened as Faust does fills one
    plain = RocksDBOptions().open(tmp_path / "plain.db")
    _fill(plain)
    assert _wal_bytes(tmp_path / "plain.db") > 0
    plain.close()

    faust_compat.changelog_instead_of_wal()
    faust_compat.changelog_instead_of_wal()  # idempotent
    options = RocksDBOptions()
    store = SimpleNamespace(partition_path=lambda p: tmp_path / f"sequences-{p}.db", rocksdb_options=options,
                            read_only=False)
    db = Store._open_for_partition(store, 0)
    _fill(db)
    assert _wal_bytes(tmp_path / "sequences-0.db") == 0
    assert db[b"user-7"] == b"x" * 1000
    db.close()


def test_another_faust_or_aiokafka_version_is_refused_by_name(monkeypatch):
    faust_compat.check()  # the installed versions are the tested ones
    monkeypatch.setitem(faust_compat.TESTED, "aiokafka", "0.0.1")
    with pytest.raises(faust_compat.FaustCompatError, match=r"aiokafka 0\.14\.0 is installed.*aiokafka==0\.0\.1"):
        faust_compat.check()


def test_a_changed_shape_of_what_is_patched_or_read_is_refused(monkeypatch):
    from faust.transport.drivers.aiokafka import Producer

    monkeypatch.setattr(Producer, "_ensure_producer", lambda self, wait=True: None)
    with pytest.raises(faust_compat.FaustCompatError, match=r"Producer\._ensure_producer changed"):
        faust_compat.check()
    monkeypatch.delattr(Producer, "_ensure_producer")
    with pytest.raises(faust_compat.FaustCompatError, match=r"_ensure_producer is gone"):
        faust_compat.check()
