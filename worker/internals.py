"""The project's one seam to third-party internals: three patches of faust-streaming and aiokafka,
four private names of theirs, and prometheus-client's histogram buckets.

Nothing else in the project touches a private name of theirs. `check()` runs before the App is
built: it refuses to start, with one line naming what changed, when the installed versions are
not the ones these were written and tested against, or when what they patch or read no longer
has the shape they expect. docs/faust-notes.md gives the evidence; each patch has a test that
fails without it (named in its docstring).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import version
from typing import Any

import numpy as np
from prometheus_client import Histogram

TESTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "prometheus-client": "0.26.0"}
HISTOGRAM_PARTS = ("_upper_bounds", "_buckets", "_sum")  # what observe_many reads and increments


class InternalsChanged(RuntimeError):
    """An installed package differs from what the patches and private reads here were written for."""


def _require(owner: type, name: str, parameters: tuple[str, ...], coroutine: bool) -> None:
    function = getattr(owner, name, None)
    if function is None:
        raise InternalsChanged(f"{owner.__module__}.{owner.__qualname__}.{name} is gone")
    if getattr(function, "_ecseq_patch", False):
        function = function._ecseq_original
    found = tuple(inspect.signature(function).parameters)
    if found != parameters or inspect.iscoroutinefunction(function) != coroutine:
        raise InternalsChanged(f"{owner.__module__}.{owner.__qualname__}.{name} changed: parameters {found}, "
                               f"expected {parameters}{' (async)' if coroutine else ''}")


def check() -> None:
    """Refuse to run on versions or shapes other than those tested (see the module docstring)."""
    for package, tested in TESTED.items():
        installed = version(package)
        if installed != tested:
            raise InternalsChanged(f"{package} {installed} is installed; the worker's patches of its internals "
                                   f"(worker/internals.py) were tested on {tested}: install {package}=={tested}")
    import faust.streams
    from faust.stores.rocksdb import Store
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Producer
    from mode import Worker
    from prometheus_client import CollectorRegistry

    _require(Recovery, "on_recovery_completed", ("self", "generation_id"), coroutine=True)
    _require(AIOKafkaConsumerThread, "getmany", ("self", "active_partitions", "timeout"), coroutine=True)
    _require(Store, "_open_for_partition", ("self", "partition"), coroutine=False)
    _require(Store, "_db_for_partition", ("self", "partition"), coroutine=False)
    _require(Producer, "_ensure_producer", ("self",), coroutine=False)
    _require(Worker, "_on_sigterm", ("self",), coroutine=False)
    _require(Worker, "_on_sigint", ("self",), coroutine=False)
    if not isinstance(getattr(faust.streams, "_current_event", None), ContextVar):
        raise InternalsChanged("faust.streams._current_event is gone (read by current_event)")
    probe = Histogram("probe", "", buckets=(1.0,), registry=CollectorRegistry())
    missing = [name for name in HISTOGRAM_PARTS if not hasattr(probe, name)]
    if missing:
        raise InternalsChanged(f"prometheus_client.Histogram has no {', '.join(missing)} (read by observe_many)")


def apply() -> None:
    """`check()`, then patch (idempotent: a second call changes nothing)."""
    check()
    hold_streams_until_seeked()
    fetch_only_active_partitions()
    changelog_instead_of_wal()


def _patch(owner: type, name: str, replacement: Any) -> None:
    original = getattr(owner, name)
    if getattr(original, "_ecseq_patch", False):
        return
    replacement._ecseq_patch = True
    replacement._ecseq_original = original
    setattr(owner, name, replacement)


def hold_streams_until_seeked() -> None:
    """Close the recovery race that skips source events after a restart (upstream #596).

    With tables, recovery resumes flow control to read the changelogs; when it completes,
    ``Recovery.on_recovery_completed`` resumes the source partitions *before* seeking them
    to the committed offsets and before ``flow_control.resume()`` clears the stream queues.
    Records fetched in that window reach the agent or sit in a queue that is then cleared,
    while the consumer's read offset has moved past them, so their refetch is dropped as a
    duplicate ("DROPPED MESSAGE ROFF") -- a gap that is never processed and that blocks
    every later commit on the partition. Suspending flow control first makes the fetched
    records wait in the conductor until the seek and the clear are done (the order the
    table-less path, ``Recovery._resume_streams``, already has).
    Test: tests/worker/test_micro_batches.py (a restart after SIGTERM while thousands of events
    wait: without the patch 2,865-4,097 of 8,000 were never scored in 3 of 4 runs).
    """
    from faust.tables.recovery import Recovery

    completed = Recovery.on_recovery_completed

    async def on_recovery_completed(self, generation_id: int = 0) -> None:  # type: ignore[no-untyped-def]
        self.app.flow_control.suspend()
        await completed(self, generation_id)

    _patch(Recovery, "on_recovery_completed", on_recovery_completed)


def fetch_only_active_partitions() -> None:
    """Hand aiokafka a copy of the partitions to return records for, taken when the fetch starts.

    Faust's ``Consumer._wait_next_records`` passes its live ``_active_partitions`` set to
    ``AIOKafkaConsumerThread.getmany``; aiokafka's ``Fetcher.fetched_records`` keeps reading that
    set while it waits for records, and reads an *empty* set as "every assigned partition".
    aiokafka prefetches every assigned partition (Faust's pauses are its own bookkeeping), so when
    recovery pauses the last active partitions while a fetch waits ("Done reading from changelog
    topics" on a replica with no standbys), the fetch drains the paused source partitions and the
    standby changelogs alike. Faust drops those records (their partitions are not active) after
    aiokafka's position has moved past them: a standby misses the keys written before that point
    while claiming to be current, and a source partition with no committed offset yet is never
    sought back (aiokafka seeks only to committed offsets above 0), so its events go unscored.
    Measured on Kafka in the SIGKILL recovery test: one fetch returned 733 events of 4 paused
    source partitions and 722 standby changelog records after the set had emptied. With a copy,
    records of partitions outside it stay in aiokafka's buffer for a later fetch, and an empty
    copy fetches nothing, which is what Faust's own check before the fetch intends.
    Test: tests/worker/test_internals.py (a set emptied while the fetch waits, real broker).
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    getmany = AIOKafkaConsumerThread.getmany

    async def _getmany(self, active_partitions, timeout):  # type: ignore[no-untyped-def]
        if active_partitions is None:  # client-only apps: every partition
            return await getmany(self, None, timeout)
        snapshot = frozenset(active_partitions)
        if not snapshot:
            return {}
        return await getmany(self, snapshot, timeout)

    _patch(AIOKafkaConsumerThread, "getmany", _getmany)


def changelog_instead_of_wal() -> None:
    """Write the RocksDB table partitions without RocksDB's write-ahead log.

    Faust's RocksDB store appends every put to the WAL (a write() per key). The changelog topic
    is the durable copy already, which is why Kafka Streams disables RocksDB's WAL too: a
    process killed before a memtable flush loses the unflushed suffix of writes -- the persisted
    offset among them, as it is written after its data -- so recovery replays the changelog
    from an older offset and ends in the same state.
    Test: tests/worker/test_internals.py (no WAL bytes written); the SIGKILL recovery test
    (tests/worker/test_recovery.py) runs with it.
    """
    from faust.stores import rocksdb as store_module
    from rocksdict import Rdict, WriteOptions

    open_partition = store_module.Store._open_for_partition

    def _open_for_partition(self, partition):  # type: ignore[no-untyped-def]
        db = open_partition(self, partition)
        if isinstance(db, Rdict):
            options = WriteOptions()
            options.disable_wal = True
            db.set_write_options(options)
        return db

    _patch(store_module.Store, "_open_for_partition", _open_for_partition)


def aiokafka_producer(app: Any) -> Any:
    """The started aiokafka producer under Faust's: its record-batch API has no Faust counterpart
    (worker/record_batches.py sends whole record batches; Topic.send's per-record futures and callbacks
    cost more than scoring the event)."""
    return app.producer._ensure_producer()


def stop_signal_handlers(worker: Any) -> dict[int, Any]:
    """mode.Worker's own SIGTERM / SIGINT handlers (each starts its clean stop), for a runner that
    wraps them (worker/runner.py): the loop holds one handler per signal and mode names no public one."""
    import signal

    return {signal.SIGTERM: worker._on_sigterm, signal.SIGINT: worker._on_sigint}


def rocksdb_partition(store: Any, partition: int) -> Any:
    """The rocksdict DB of one RocksDB table partition, for one write batch per micro-batch
    (Faust's own changelog recovery writes that way; its public put is per key)."""
    return store._db_for_partition(partition)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for each of `values`, with one increment per bucket touched.

    An observe is a Python loop over the bucket bounds, and the worker makes two per event. This
    fills the same buckets (a value counts in the first bucket whose bound is >= it) through the
    client's own bucket values (`check` verifies they exist; tests/worker/test_metrics.py checks
    the result against observe's).
    """
    if len(values) == 0:
        return
    bucket = np.searchsorted(histogram._upper_bounds, values, side="left")
    histogram._sum.inc(float(np.sum(values)))
    for index, count in zip(*np.unique(bucket, return_counts=True)):
        if index < len(histogram._buckets):  # NaN: in no bucket, as with observe
            histogram._buckets[index].inc(int(count))


@contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make `event` Faust's current event (what ``Table.partition_for_key`` reads to co-partition a
    table write with its input): inside a ``take_events()`` batch there is none, and Faust names no
    public way to set it (docs/faust-notes.md)."""
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
