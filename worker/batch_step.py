"""One micro-batch as a pure step: input records in, every output the batch makes out.

The worker's agent only moves bytes (records from Faust in, outputs to the producer and the
sequence table) around `score_batch`; everything that decides what a record becomes (decoding,
repartitioning, dead letters, the user's history, the score and its record) happens here, with
no broker, no Faust and no await, so it can be tested in-process and timed stage by stage.

What it keeps from the worker's contract: one artifact (scorer) for the whole batch; a
redelivered event (an id its user's history holds with the same content) is scored again on
the same window and not appended twice; an id held with other content is refused as ID_REUSED,
an event older than a full history as TOO_LATE; several events of one user in a batch each get
the window they had when they arrived; a record not keyed by its user is forwarded, not scored.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, cast

import numpy as np
import orjson

from ecseq.decoding import Event, EventSchema, decode_event
from ecseq.history import NOT_KEPT, UserHistory
from ecseq.online import OnlineScorer
from ecseq.scoring import Lap
from worker.outputs import ID_REUSED, TOO_LATE, DeadLetter, Source, dead_letter, score_record


class InputRecord(NamedTuple):
    """An input record as the consumer read it (a tuple: one is made per event)."""

    key: bytes | None
    value: bytes | None
    source: Source


class Refused(NamedTuple):
    """A dead letter and why its record was refused (a decoder reason, TOO_LATE or ID_REUSED)."""

    reason: str
    letter: DeadLetter


class HistoryView(Protocol):
    """Where users' histories are read (HistoryTable). The step appends to what it is given, so a
    history returned here may be changed in place; `BatchResult.state` is what to write back."""

    def history(self, user: str, schema: EventSchema) -> UserHistory: ...


@dataclass(frozen=True)
class BatchResult:
    """Everything one micro-batch sends, writes and counts, in the order the worker sends it."""

    scores: list[tuple[bytes, bytes]]  # (user id, score record JSON): one per scored event, input order
    dead_letters: list[Refused]  # decoding's refusals first, then the state's, each in input order
    forwards: list[tuple[bytes, bytes]]  # (user id, value as it arrived) for the repartition topic
    state: list[tuple[str, UserHistory, int]]  # (user, history, partition of its last event): HistoryTable.write's
    timestamps: list[float]  # the scored events' Kafka timestamps, in the order of `scores`
    duplicates: int  # scored events whose id their history already held (redeliveries)
    neighbours: np.ndarray  # int64, per scored event: the compressed nodes it attached to

    @property
    def scored(self) -> int:
        return len(self.scores)

    @property
    def repartitioned(self) -> int:
        return len(self.forwards)

    def dead_letters_by_reason(self) -> Counter[str]:
        return Counter(refused.reason for refused in self.dead_letters)


def score_batch(records: Sequence[InputRecord], scorer: OnlineScorer, state: HistoryView, limit: int,
                max_event_bytes: int, max_request_bytes: int, received: float, lap: Lap | None = None,
                clock: Callable[[], float] = time.time) -> BatchResult:
    """Decode, check against state, and score `records` with `scorer`; nothing is sent or written.

    `limit`: the events a history keeps; `max_request_bytes`: the producer's request size, which
    bounds a dead letter; `received`: when the batch was taken from the consumer (score records'
    ``timestamps.received``; ``scored`` is `clock()` once the scores are in). `lap` is told
    "decode", then "state", then the scorer's own stages, as each ends; writing `state` back is the
    caller's, after this returns, so it is in none of them.
    """
    schema = scorer.schema
    refused: list[Refused] = []
    forwards: list[tuple[bytes, bytes]] = []
    valid: list[tuple[InputRecord, Event]] = []
    for record in records:
        decoded = decode_event(record.value, schema, max_event_bytes)
        if isinstance(decoded, str):
            refused.append(_refused(record, decoded, max_request_bytes))
            continue
        user_key = decoded.user_id.encode()
        if record.key != user_key:  # its partition is not its user's: forwarded to the one that is
            forwards.append((user_key, cast(bytes, record.value)))  # decoded: not a tombstone
        else:
            valid.append((record, decoded))
    if lap is not None:
        lap("decode")

    histories, positions, kept = [], [], []
    duplicates = 0
    latest: dict[str, tuple[UserHistory, int]] = {}  # user -> history, partition of its event
    for record, decoded in valid:
        if decoded.user_id in latest:  # the user's earlier events in this batch keep their windows
            history = latest[decoded.user_id][0].copy()
        else:
            history = state.history(decoded.user_id, schema)
        known = decoded.event_id in history
        if known and not history.holds(decoded):  # a redelivery is scored again; new content is not it
            refused.append(_refused(record, ID_REUSED, max_request_bytes))
            continue
        position = history.append(decoded, limit)
        if position == NOT_KEPT:
            refused.append(_refused(record, TOO_LATE, max_request_bytes))
            continue
        if known:
            duplicates += 1
        latest[decoded.user_id] = (history, record.source.partition)
        histories.append(history)
        positions.append(position)
        kept.append((decoded, record.source))
    if lap is not None:
        lap("state")

    scores = scorer.score(histories, positions, lap)
    scored_at = clock()
    version = scorer.version
    # a score is keyed by its user, like its input
    out = [(score.user_id.encode(), orjson.dumps(score_record(score, version, decoded.ts, source, received, scored_at)))
           for score, (decoded, source) in zip(scores, kept)]
    return BatchResult(
        scores=out, dead_letters=refused, forwards=forwards,
        state=[(user, history, partition) for user, (history, partition) in latest.items()],
        timestamps=[source.timestamp for _, source in kept], duplicates=duplicates,
        neighbours=np.fromiter((score.neighbours for score in scores), dtype=np.int64, count=len(scores)))


def _refused(record: InputRecord, reason: str, max_request_bytes: int) -> Refused:
    return Refused(reason, dead_letter(record.key, record.value, reason, record.source, max_request_bytes))
