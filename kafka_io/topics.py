"""Blocking helpers around aiokafka for setup, tests and the builder's batch reads.

Each call makes and closes its own client: these run rarely (topic setup, a test's
round trip, a builder pass), so simplicity beats connection reuse. They work from
plain code and from inside a running event loop (they then run on a private loop
in a helper thread, blocking the caller until done).

Beware on Tansu (the dev broker): a metadata request that names a missing topic, or
a produce to one, creates it with 4 partitions. Nothing here names a topic in a
metadata request unless it is known to exist; call ``ensure_topics`` before producing.

Errors: an unreachable broker raises aiokafka's ``KafkaConnectionError`` (a ``KafkaError``)
at once; a call that outlives its ``timeout`` raises ``TimeoutError``.
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
from aiokafka.errors import for_code

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


def _run(make: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
    """Run an async job to completion under a deadline, from sync or async callers."""

    async def bounded() -> T:
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


@asynccontextmanager
async def _admin(bootstrap: str, timeout: float) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=_request_timeout_ms(timeout)
    )
    try:  # close even when start fails, or aiokafka warns about an unclosed client
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def _all_topics(admin: AIOKafkaAdminClient) -> dict[str, int]:
    # topics=None asks for every topic, which never auto-creates one (naming it would, on Tansu).
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(None)}


def topic_partitions(bootstrap: str, timeout: float = 30.0) -> dict[str, int]:
    """Partition count of every topic on the cluster (one metadata request)."""

    async def job() -> dict[str, int]:
        async with _admin(bootstrap, timeout) as admin:
            return await _all_topics(admin)

    return _run(job, timeout, f"metadata from {bootstrap}")


def topic_config(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, str]:
    """Topic-level configs the broker reports (Tansu reports only those set at creation)."""

    async def job() -> dict[str, str]:
        async with _admin(bootstrap, timeout) as admin:
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
    bootstrap: str,
    topics: Mapping[str, int],
    compacted: Collection[str] = (),
    timeout: float = 30.0,
) -> None:
    """Create the missing topics (N partitions, replication 1); existing ones are left alone.

    Topics in ``compacted`` get ``cleanup.policy=compact``. An existing topic with a
    different partition count is only warned about: repartitioning is an operator's call.
    """
    unknown = set(compacted) - set(topics)
    if unknown:
        raise ValueError(f"compacted topics not in topics: {sorted(unknown)}")
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")

    async def job() -> None:
        async with _admin(bootstrap, timeout) as admin:
            existing = await _all_topics(admin)
            for name, want in topics.items():
                if name in existing and existing[name] != want:
                    log.warning(
                        "topic %s exists with %d partitions, not %d; left alone",
                        name,
                        existing[name],
                        want,
                    )
            missing = [name for name in topics if name not in existing]
            if not missing:
                return
            new = [
                NewTopic(
                    name,
                    topics[name],
                    1,
                    topic_configs={"cleanup.policy": "compact"}
                    if name in compacted
                    else None,
                )
                for name in missing
            ]
            response = await admin.create_topics(new)
            for name, error_code, error_message in response.topic_errors:
                # Someone else creating it meanwhile is fine: the goal is that it exists.
                if error_code and error_code != _TOPIC_ALREADY_EXISTS:
                    raise for_code(error_code)(
                        f"create topic {name!r}: {error_message}"
                    )
            log.info("created topics %s on %s", ", ".join(missing), bootstrap)
            # Real Kafka can answer CreateTopics before metadata shows the topic everywhere.
            while not set(missing) <= set(await _all_topics(admin)):
                await asyncio.sleep(0.05)

    _run(job, timeout, f"ensure topics {sorted(topics)} on {bootstrap}")


def _encode_value(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return json.dumps(value).encode("utf-8")


def _encode_key(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode("utf-8")


def produce_json(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[str | bytes | None, Any]],
    timeout: float = 30.0,
) -> None:
    """Send (key, value) pairs and wait until every one is acknowledged (acks=all).

    Values are ``json.dumps``'d (so ``None`` becomes ``null``, NaN stays ``NaN``);
    ``bytes`` values go out unchanged, which is how tests send garbage.
    """

    async def job() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            request_timeout_ms=_request_timeout_ms(timeout),
        )
        try:
            await producer.start()
            pending = [
                await producer.send(topic, _encode_value(value), key=_encode_key(key))
                for key, value in records
            ]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        log.debug("produced %d records to %s", len(pending), topic)

    _run(job, timeout, f"produce to {topic!r}")


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every record in ``topic`` up to its end offsets when the read began, by (partition, offset).

    No consumer group and no commits, so it never disturbs the app's groups. A topic
    that does not exist holds no records: returns ``[]`` (and does not create it).

    The end of a partition is the high watermark of its first fetch response, not only
    ListOffsets: Tansu answers ListOffsets(latest) with the last *batch*'s base offset + 1,
    which falls short whenever that batch held more than one record.
    """

    async def job() -> list[Record]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            request_timeout_ms=_request_timeout_ms(timeout),
        )
        try:
            await consumer.start()
            if topic not in await consumer.topics():
                return []
            tps = [
                TopicPartition(topic, p)
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not tps:
                return []
            start = await consumer.beginning_offsets(tps)
            listed_end = await consumer.end_offsets(tps)
            # Even Tansu's short answer is > start when the partition holds anything.
            todo = [tp for tp in tps if listed_end[tp] > start[tp]]
            if not todo:
                return []
            consumer.assign(todo)
            await consumer.seek_to_beginning(*todo)
            end: dict[TopicPartition, int] = {}
            out: list[Record] = []
            remaining = set(todo)
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp in remaining:
                    highwater = consumer.highwater(tp)
                    if tp not in end and highwater is not None:
                        end[tp] = max(listed_end[tp], highwater)
                for tp, messages in batches.items():
                    limit = end.get(tp, listed_end[tp])
                    out.extend(
                        Record(
                            m.topic, m.partition, m.offset, m.key, m.value, m.timestamp,
                            tuple(m.headers or ()),
                        )
                        for m in messages
                        if m.offset < limit
                    )
                # Position, not last offset + 1: compaction can leave gaps up to the end.
                for tp in list(remaining):
                    if tp in end and await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
                        consumer.pause(tp)
            out.sort(key=lambda r: (r.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    started = time.monotonic()
    records = _run(job, timeout, f"read {topic!r}")
    log.debug(
        "read %d records from %s in %.3fs",
        len(records),
        topic,
        time.monotonic() - started,
    )
    return records
