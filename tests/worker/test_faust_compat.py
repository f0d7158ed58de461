"""faust_compat patches that can be shown without a broker (the others are shown by the worker tests)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

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
