"""Blocking helpers around aiokafka for setup, tests and the builder's batch reads.

Each call makes and closes its own client: these run rarely (topic setup, a test's
round trip, a builder pass), so simplicity beats connection reuse. They work from
plain code and from inside a running event loop (they then run on a private loop
in a helper thread, blocking the caller until done).

Every call takes a `KafkaClientConfig` (or a bare bootstrap string for a plaintext loopback
broker). Nothing here names a topic in a metadata request unless it is known to exist (a
broker that auto-creates topics would create it); call ``ensure_topics`` before producing.

Errors: a broker that cannot be reached or refuses the credentials raises ``BrokerError``
naming the cause (``KafkaClientConfig.check``); a call that outlives its ``timeout`` raises
``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError, for_code

from ecseq.settings import variable
from kafka_io.client import KafkaClientConfig
from kafka_io.errors import BrokerError

Client = KafkaClientConfig | str

log = logging.getLogger("kafka_io")

T = TypeVar("T")

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class Record:
    """One Kafka record as read back, with where it sits in the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    def json(self) -> Any:
        """The value decoded as JSON (NaN/Infinity accepted, as Python writes them)."""
        if self.value is None:
            raise ValueError(
                f"{self.topic}[{self.partition}]@{self.offset} has no value (tombstone)"
            )
        return json.loads(self.value)


def _run(make: Callable[[], Awaitable[T]], timeout: float | None, what: str) -> T:
    """Run an async job to completion under a deadline (None: the job bounds its own waits), from
    sync or async callers."""

    async def bounded() -> T:
        if timeout is None:
            return await make()
        try:
            return await asyncio.wait_for(make(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{what} did not finish within {timeout:g}s") from None

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    # asyncio.run refuses to nest; a private loop in a thread keeps the call usable.
    with concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="kafka_io"
    ) as pool:
        return pool.submit(asyncio.run, bounded()).result()


def _request_timeout_ms(timeout: float) -> int:
    # aiokafka's default (40 s) would outlive our own deadline; keep a floor for slow CI.
    return max(1000, int(timeout * 1000))


async def _start(client: Any, config: KafkaClientConfig, kwargs: dict[str, Any]) -> None:
    """Start an aiokafka client built with ``kwargs`` after `KafkaClientConfig.check`: a refused or
    unreachable bootstrap ends in one line naming the cause, not in aiokafka's log lines and its
    "Unable to bootstrap"."""
    await config.check(kwargs=kwargs)
    await client.start()


@asynccontextmanager
async def admin_client(client: Client, timeout: float) -> AsyncIterator[AIOKafkaAdminClient]:
    config = KafkaClientConfig.of(client)
    kwargs = config.aiokafka()
    admin = AIOKafkaAdminClient(**kwargs, request_timeout_ms=_request_timeout_ms(timeout))
    try:  # close even when start fails, or aiokafka warns about an unclosed client
        await _start(admin, config, kwargs)
        yield admin
    finally:
        await admin.close()


async def _any_node(request: Callable[[], Awaitable[T]], attempts: int = 10) -> T:
    """An admin request that any broker can answer: aiokafka sends it to a random node of the
    metadata, which may be a broker that just died (until the controller fences it), so try again."""
    for _ in range(attempts - 1):
        try:
            return await request()
        except (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError):
            await asyncio.sleep(0.2)
    return await request()


async def _all_topics(admin: AIOKafkaAdminClient) -> dict[str, int]:
    # topics=None asks for every topic, which never auto-creates one (naming one could).
    described = await _any_node(lambda: admin.describe_topics(None))
    return {t["topic"]: len(t["partitions"]) for t in described}


async def partition_counts(client: Client, timeout: float = 30.0) -> dict[str, int]:
    """Partition count of every topic on the cluster, from async code (one metadata request)."""
    async with admin_client(client, timeout) as admin:
        return await _all_topics(admin)


def topic_partitions(client: Client, timeout: float = 30.0) -> dict[str, int]:
    """Partition count of every topic on the cluster (one metadata request)."""
    return _run(lambda: partition_counts(client, timeout), timeout, "metadata")


def cluster_brokers(client: Client, timeout: float = 30.0) -> set[int]:
    """Node ids of the brokers the cluster's metadata lists (registered and not fenced)."""

    async def job() -> set[int]:
        async with admin_client(client, timeout) as admin:
            return {broker["node_id"] for broker in (await _any_node(admin.describe_cluster))["brokers"]}

    return _run(job, timeout, "describe cluster")


def partition_leaders(client: Client, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Partition -> node id of its leader (-1 while it has none)."""

    async def job() -> dict[int, int]:
        async with admin_client(client, timeout) as admin:
            described = await _any_node(lambda: admin.describe_topics([topic]))
        return {p["partition"]: p["leader"] for d in described for p in d["partitions"]}

    return _run(job, timeout, f"describe {topic!r}")


def replication_for(brokers: int, replication_factor: int = 0, min_insync_replicas: int = 0) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the topics ecseq creates on a cluster of ``brokers``.

    0 means "suit the cluster": 3 replicas where there are 3+ brokers, and 2 in sync so that
    acks=all survives one lost broker; a smaller cluster gets what it can hold.
    """
    factor = replication_factor or min(3, brokers)
    if factor > brokers:
        raise BrokerError(f"replication factor {factor} ({variable('replication_factor')}) needs "
                          f"{factor} brokers; the cluster has {brokers}")
    insync = min_insync_replicas or (2 if factor >= 3 else 1)
    if insync > factor:
        raise BrokerError(f"min.insync.replicas {insync} ({variable('min_insync_replicas')}) is above "
                          f"the replication factor {factor}")
    return factor, insync


def topic_config(client: Client, topic: str, timeout: float = 30.0) -> dict[str, str]:
    """Topic-level configs the broker reports."""

    async def job() -> dict[str, str]:
        async with admin_client(client, timeout) as admin:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        out: dict[str, str] = {}
        for response in responses:
            for error_code, error_message, _type, _name, entries in response.resources:
                if error_code:
                    raise for_code(error_code)(
                        f"describe configs of {topic!r}: {error_message}"
                    )
                for entry in entries:
                    out[entry[0]] = entry[1]
        return out

    return _run(job, timeout, f"describe configs of {topic!r}")


def ensure_topics(
    client: Client,
    topics: Mapping[str, int],
    compacted: Collection[str] = (),
    timeout: float = 30.0,
    replication_factor: int = 0,
    min_insync_replicas: int = 0,
) -> tuple[int, int]:
    """Create the missing topics; existing ones are left alone. Returns (replication, min in sync) used.

    Replication and ``min.insync.replicas`` follow `replication_for` on the cluster found.
    Topics in ``compacted`` get ``cleanup.policy=compact``. An existing topic with a
    different partition count is only warned about: repartitioning is an operator's call.
    """
    unknown = set(compacted) - set(topics)
    if unknown:
        raise ValueError(f"compacted topics not in topics: {sorted(unknown)}")
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")

    async def job() -> tuple[int, int]:
        async with admin_client(client, timeout) as admin:
            brokers = len((await _any_node(admin.describe_cluster))["brokers"])
            factor, insync = replication_for(brokers, replication_factor, min_insync_replicas)
            existing = await _all_topics(admin)
            for name, want in topics.items():
                if name in existing and existing[name] != want:
                    log.warning("topic %s exists with %d partitions, not %d; left alone", name, existing[name], want)
            missing = [name for name in topics if name not in existing]
            if not missing:
                return factor, insync
            configs = {"min.insync.replicas": str(insync)}
            new = [NewTopic(name, topics[name], factor,
                            topic_configs=configs | ({"cleanup.policy": "compact"} if name in compacted else {}))
                   for name in missing]
            response = await admin.create_topics(new)
            for name, error_code, error_message in response.topic_errors:
                # Someone else creating it meanwhile is fine: the goal is that it exists.
                if error_code and error_code != _TOPIC_ALREADY_EXISTS:
                    raise for_code(error_code)(f"create topic {name!r}: {error_message}")
            log.info("created topics %s (replication %d, min in sync %d)", ", ".join(missing), factor, insync)
            # Kafka can answer CreateTopics before metadata shows the topic everywhere.
            while not set(missing) <= set(await _all_topics(admin)):
                await asyncio.sleep(0.05)
            return factor, insync

    return _run(job, timeout, f"ensure topics {sorted(topics)}")


def _encode_value(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return json.dumps(value).encode("utf-8")


def _encode_key(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode("utf-8")


def produce_json(
    client: Client,
    topic: str,
    records: Iterable[tuple[str | bytes | None, Any]],
    timeout: float = 30.0,
) -> None:
    """Send (key, value) pairs and wait until every one is acknowledged (acks=all).

    Values are ``json.dumps``'d (so ``None`` becomes ``null``, NaN stays ``NaN``);
    ``bytes`` values go out unchanged, which is how tests send garbage.
    """

    async def job() -> None:
        config = KafkaClientConfig.of(client)
        kwargs = config.aiokafka()
        producer = AIOKafkaProducer(**kwargs, acks="all", request_timeout_ms=_request_timeout_ms(timeout))
        try:
            await _start(producer, config, kwargs)
            pending = [
                await producer.send(topic, _encode_value(value), key=_encode_key(key))
                for key, value in records
            ]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        log.debug("produced %d records to %s", len(pending), topic)

    _run(job, timeout, f"produce to {topic!r}")


async def _read_ranges(consumer: AIOKafkaConsumer, config: KafkaClientConfig, topic: str,
                       timeout: float) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition of `topic`: (first offset, end offset now); none if the topic does not exist."""
    # the consumer's own topics() does not fill in partitions_for_topic
    partitions = (await partition_counts(config, timeout)).get(topic, 0)
    if not partitions:
        return {}
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    end = await consumer.end_offsets(tps)
    first = await consumer.beginning_offsets(tps)
    return {tp: (first[tp], end[tp]) for tp in tps}


async def first_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition], since: float | None,
                        end: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Per partition, the first offset stamped at or after `since` (epoch seconds; None: the first
    offset there is); a partition with no such record starts at its `end`."""
    if since is None:
        return await consumer.beginning_offsets(tps)
    found = await consumer.offsets_for_times({tp: max(int(since * 1000), 0) for tp in tps})
    return {tp: end[tp] if found[tp] is None else found[tp].offset for tp in tps}


def read_topic(client: Client, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every record in ``topic`` up to its end offsets when the read began, by (partition, offset).

    No consumer group and no commits, so it never disturbs the app's groups. A topic
    that does not exist holds no records: returns ``[]`` (and does not create it). ``timeout``
    bounds the setup and each wait for the next records, not the whole read: a long window takes
    as long as reading it does, and a stalled one fails after ``timeout``.
    """

    async def job() -> list[Record]:
        config = KafkaClientConfig.of(client)
        consumer = AIOKafkaConsumer(**config.aiokafka(), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                    request_timeout_ms=_request_timeout_ms(timeout))
        try:
            try:
                ranges = await asyncio.wait_for(_read_ranges(consumer, config, topic, timeout), timeout)
            except TimeoutError:
                raise TimeoutError(f"read {topic!r}: its offsets did not come within {timeout:g}s") from None
            todo = [tp for tp, (first, end) in ranges.items() if end > first]
            if not todo:
                return []
            consumer.assign(todo)
            for tp in todo:
                consumer.seek(tp, ranges[tp][0])
            out: list[Record] = []
            remaining = set(todo)
            progressed = time.monotonic()
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, messages in batches.items():
                    out.extend(Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp,
                                      tuple(m.headers or ())) for m in messages if m.offset < ranges[tp][1])
                if batches:
                    progressed = time.monotonic()
                elif time.monotonic() - progressed > timeout:
                    raise TimeoutError(f"read {topic!r}: no records for {timeout:g}s with {len(remaining)} "
                                       f"partition(s) short of their end")
                # Position, not last offset + 1: compaction can leave gaps up to the end.
                for tp in list(remaining):
                    if await consumer.position(tp) >= ranges[tp][1]:
                        remaining.discard(tp)
                        consumer.pause(tp)
            out.sort(key=lambda r: (r.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    started = time.monotonic()
    records = _run(job, None, f"read {topic!r}")
    log.debug(
        "read %d records from %s in %.3fs",
        len(records),
        topic,
        time.monotonic() - started,
    )
    return records
