"""Fixes to faust-streaming 0.15.3 (and for the Tansu dev broker) that the worker depends on.

Each is a small, idempotent patch of one Faust method, applied by `apply()` before the App is
built; worker/FAUST_NOTES.md gives the evidence (source functions, experiments) for each.
On Apache Kafka they are harmless: the fetch wait only bounds latency, the highwater probe
agrees with ListOffsets there, and without RocksDB's WAL the changelog stays the durable copy.
"""

from __future__ import annotations


def apply(fetch_wait_ms: int) -> None:
    hold_streams_until_seeked()
    fetch_only_active_partitions()
    shorten_fetch_wait(fetch_wait_ms)
    true_highwaters()
    changelog_instead_of_wal()


def shorten_fetch_wait(max_wait_ms: int) -> None:
    """Make Faust's consumer fetch wait at most ``max_wait_ms`` (Faust hard-codes 1500 ms).

    Tansu holds every fetch for about its full max wait even when records are there
    (fetch_min_bytes=1 is not honoured), so Faust's hard-coded fetch_max_wait_ms=1500 in
    ``AIOKafkaConsumerThread._create_worker_consumer`` costs ~0.5-1.5 s of latency per event.
    aiokafka reads ``_fetch_max_wait_ms`` when the consumer starts, after this hook runs.
    """
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_fetch_wait_patched", False):
        return

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create(self, transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("aiokafka changed: no AIOKafkaConsumer._fetch_max_wait_ms")
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    _create_worker_consumer._fetch_wait_patched = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer


def true_highwaters() -> None:
    """Give Faust's table recovery the real end of each changelog partition on Tansu.

    Recovery compares the offset a RocksDB partition persisted with ``highwaters() - 1``
    (tables/recovery.py ``_restart_recovery``), and ``highwaters`` is ListOffsets(latest)
    (drivers/aiokafka.py ``AIOKafkaConsumerThread._highwaters``). Tansu answers that with
    the last *batch's* base offset + 1, so a store that holds the true last record raises
    ConsistencyError, and recovery may stop short of the real end. The fetch response's
    high watermark is right: fetch the last listed record and take the larger of the two.
    On Kafka both agree and this only costs one small fetch per recovery.
    """
    from aiokafka import AIOKafkaConsumer
    from faust.transport.drivers import aiokafka as driver

    listed_highwaters = driver.AIOKafkaConsumerThread._highwaters
    if getattr(listed_highwaters, "_true_highwaters", False):
        return

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
        listed = dict(await listed_highwaters(self, partitions))
        if self.consumer.in_transaction:
            return listed
        todo = [tp for tp, end in listed.items() if end]
        if not todo:
            return listed
        transport = self.transport
        probe = AIOKafkaConsumer(
            bootstrap_servers=driver.server_list(transport.url, transport.default_port),
            group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50,
            request_timeout_ms=int(self.app.conf.broker_request_timeout * 1000),
        )
        await probe.start()
        try:
            probe.assign(todo)
            for tp in todo:
                probe.seek(tp, listed[tp] - 1)
            waiting = set(todo)
            for _ in range(100):
                if not waiting:
                    break
                await probe.getmany(*waiting, timeout_ms=100)
                for tp in list(waiting):
                    hw = probe.highwater(tp)
                    if hw is not None:
                        listed[tp] = max(listed[tp], hw)
                        waiting.discard(tp)
        finally:
            await probe.stop()
        return listed

    _highwaters._true_highwaters = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._highwaters = _highwaters


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
    """
    from faust.tables.recovery import Recovery

    completed = Recovery.on_recovery_completed
    if getattr(completed, "_holds_streams", False):
        return

    async def on_recovery_completed(self, generation_id: int = 0) -> None:  # type: ignore[no-untyped-def]
        self.app.flow_control.suspend()
        await completed(self, generation_id)

    on_recovery_completed._holds_streams = True  # type: ignore[attr-defined]
    Recovery.on_recovery_completed = on_recovery_completed


def fetch_only_active_partitions() -> None:
    """Give aiokafka a snapshot of the partitions to return records for (standby state loss).

    ``Consumer._wait_next_records`` passes its live ``_active_partitions`` set to
    ``AIOKafkaConsumerThread.getmany``, which runs ``Fetcher.fetched_records`` in the consumer
    thread; that call keeps reading the set while it waits. aiokafka prefetches every assigned
    partition (Faust's pauses are only Faust's bookkeeping), and ``fetched_records`` treats an
    *empty* set as "all partitions". When recovery pauses the active changelog partitions
    ("Done reading") while a fetch waits, the set becomes empty; the standby partitions just
    sought to their start are then drained, and ``Consumer.getmany`` drops them because they
    are not active yet -- but aiokafka's position has moved past them. The standby reading
    starts at the end of that fetch: its RocksDB misses every key last written before it,
    while its persisted offset says it is current, and a takeover from it starts those users
    over (measured in tests/worker/test_recovery.py: the restarted worker's standby partitions
    missed 7 to 33 of their 88 keys in most runs, none with this patch). With a copy taken when
    the fetch starts, the records of partitions resumed meanwhile stay in aiokafka's buffer for
    the next fetch, which is what Faust's own check after the fetch expects.
    """
    from faust.transport.drivers import aiokafka as driver

    getmany = driver.AIOKafkaConsumerThread.getmany
    if getattr(getmany, "_snapshot", False):
        return

    async def _getmany(self, active_partitions, timeout):  # type: ignore[no-untyped-def]
        if active_partitions is None:  # client-only apps: every partition
            return await getmany(self, None, timeout)
        snapshot = frozenset(active_partitions)
        if not snapshot:  # aiokafka would read an empty set as "all partitions"
            return {}
        return await getmany(self, snapshot, timeout)

    _getmany._snapshot = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread.getmany = _getmany


def changelog_instead_of_wal() -> None:
    """Write the RocksDB table partitions without RocksDB's write-ahead log.

    Faust's RocksDB store appends every put to the WAL (a write() per key; a put of a 1.8 KB
    value measured 5.1 us with it, 1.7 us without). The changelog topic is the durable copy already,
    which is why Kafka Streams disables RocksDB's WAL too: a process killed before a memtable
    flush loses the unflushed suffix of writes -- the persisted offset among them, as it is
    written after its data -- so recovery replays the changelog from an older offset and ends
    in the same state.
    """
    from faust.stores import rocksdb as store_module
    from rocksdict import Rdict, WriteOptions

    open_partition = store_module.Store._open_for_partition
    if getattr(open_partition, "_without_wal", False):
        return

    def _open_for_partition(self, partition):  # type: ignore[no-untyped-def]
        db = open_partition(self, partition)
        if isinstance(db, Rdict):
            options = WriteOptions()
            options.disable_wal = True
            db.set_write_options(options)
        return db

    _open_for_partition._without_wal = True  # type: ignore[attr-defined]
    store_module.Store._open_for_partition = _open_for_partition
