"""What the worker writes: score records, and dead letters that keep the input's bytes intact.

A dead letter is the original record (same key, same value bytes) with the reason and its
origin in headers, the convention Kafka Connect uses: the bytes can be inspected or replayed
as they arrived, whatever was wrong with them. A record too large to be sent again with those
headers (a producer accepts up to its request size, ~1 MB by default, and the dead letter adds to
it) is cut to its first bytes, with the original's size and SHA-256 in headers: a dead letter
that cannot be delivered would hold its batch, and so the partition, unacknowledged for ever.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from ecseq.online import OnlineScore

HEADER_PREFIX = "ecseq."
TOO_LATE = "too_late"  # a dead-letter reason beyond decoding: older than every event of a full history
ID_REUSED = "id_reused"  # ... and: an event id the user's history holds with other content
HEADROOM = 16 * 1024  # of the producer's request size, left for headers and record overhead
KEPT_BYTES = {"key": 1024, "value": 64 * 1024}  # what a dead letter keeps of a part that made it too large


class Source(NamedTuple):
    """Where an input record came from (a tuple: one is made per event)."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka record timestamp, seconds


def score_record(score: OnlineScore, version: str, event_ts: float, source: Source, received_at: float,
                 scored_at: float) -> dict:
    return {
        "event_id": score.event_id, "user_id": score.user_id,
        "score": score.score, "encoder_score": score.encoder_score,
        "artifact_version": version, "neighbours": score.neighbours, "explanation": score.explanation,
        "event_ts": event_ts,
        "timestamps": {"kafka": source.timestamp, "received": received_at, "scored": scored_at},
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
    }


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(key: bytes | None, value: bytes | None, reason: str, source: Source,
                max_request_bytes: int) -> DeadLetter:
    """The record to send for a refused input: as it arrived (a null value stays null), unless key
    and value together leave less than HEADROOM of `max_request_bytes`; then each part beyond its
    KEPT_BYTES is cut, and headers name what was cut with its original size and digest."""
    headers = [(HEADER_PREFIX + name, str(item).encode()) for name, item in (
        ("reason", reason), ("source.topic", source.topic), ("source.partition", source.partition),
        ("source.offset", source.offset), ("source.timestamp", source.timestamp))]
    parts = {"key": key, "value": value}
    if sum(len(part or b"") for part in parts.values()) <= max_request_bytes - HEADROOM:
        return DeadLetter(key, value, headers)
    cut = [name for name, part in parts.items() if part is not None and len(part) > KEPT_BYTES[name]]
    for name in cut:
        original = bytes(parts[name])
        headers += [(f"{HEADER_PREFIX}original.{name}.bytes", str(len(original)).encode()),
                    (f"{HEADER_PREFIX}original.{name}.sha256", hashlib.sha256(original).hexdigest().encode())]
        parts[name] = original[:KEPT_BYTES[name]]
    headers.append((HEADER_PREFIX + "truncated", ",".join(cut).encode()))
    return DeadLetter(parts["key"], parts["value"], headers)
