"""What the worker writes: score records, and dead letters that keep the input's bytes intact.

A dead letter is the original record (same key, same value bytes) with the reason and its
origin in headers, the convention Kafka Connect uses: the bytes can be inspected or replayed
as they arrived, whatever was wrong with them.
"""

from __future__ import annotations

from typing import NamedTuple

from ecseq.online import OnlineScore

HEADER_PREFIX = "ecseq."
TOO_LATE = "too_late"  # a dead-letter reason beyond decoding: older than every event of a full history


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


def dead_letter_headers(reason: str, source: Source) -> list[tuple[str, bytes]]:
    return [(HEADER_PREFIX + name, str(value).encode()) for name, value in (
        ("reason", reason), ("source.topic", source.topic), ("source.partition", source.partition),
        ("source.offset", source.offset), ("source.timestamp", source.timestamp))]
