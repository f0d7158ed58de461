"""One micro-batch in-process (no broker, no Faust): every outcome a record can have, and scores
equal to OnlineScorer's on the same windows."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from ecseq.artifacts import ArtifactStore
from ecseq.decoding import REASONS, EventSchema, decode_event
from ecseq.history import UserHistory
from ecseq.online import OnlineScore, OnlineScorer
from tests.ecseq.artifacts.conftest import WINDOW, make_bundle, make_windows, publish
from worker.app import history_limit
from worker.batch_step import BatchResult, InputRecord, Refused, score_batch
from worker.outputs import HEADROOM, ID_REUSED, KEPT_BYTES, TOO_LATE, Source, dead_letter

LIMIT = history_limit(WINDOW)
MAX_EVENT_BYTES = 4096
MAX_REQUEST_BYTES = 1_000_000
RECEIVED, SCORED = 1_700_000_100.25, 1_700_000_100.75


@pytest.fixture(scope="module")
def scorers(tmp_path_factory) -> tuple[OnlineScorer, OnlineScorer]:
    """Two published versions of one feature spec with different encoders (a swap's before and after)."""
    store = ArtifactStore(tmp_path_factory.mktemp("batch_step") / "store")
    first, second = make_bundle(seed=0), make_bundle(seed=7)
    golden = make_windows(first.feature_spec, 24, seed=5)
    versions = [publish(store, bundle, golden).version for bundle in (first, second)]
    return tuple(OnlineScorer(store.load(version)) for version in versions)


@pytest.fixture
def scorer(scorers) -> OnlineScorer:
    return scorers[0]


class DictState:
    """HistoryTable's read and write on a dict of history objects (as its cache holds them)."""

    def __init__(self) -> None:
        self.histories: dict[str, UserHistory] = {}

    def history(self, user: str, schema: EventSchema) -> UserHistory:
        history = self.histories.get(user)
        return UserHistory.empty(schema) if history is None else history

    def write(self, updates: list[tuple[str, UserHistory, int]]) -> None:
        for user, history, _ in updates:
            self.histories[user] = history


def fields(event_id: str, user: str, ts: float, amount: float = 12.5, kind: str = "a", **extra: object) -> dict:
    return {"event_id": event_id, "user_id": user, "ts": ts, "amount": amount, "gap": 3.0, "kind": kind, **extra}


def wire(event_id: str, user: str, ts: float, **kwargs: object) -> bytes:
    return json.dumps(fields(event_id, user, ts, **kwargs)).encode()


def record(value: bytes | None, key: bytes | None = b"u1", offset: int = 0, partition: int = 2) -> InputRecord:
    return InputRecord(key, value, Source("events", partition, offset, 1_700_000_000.0 + offset))


def event(event_id: str, user: str, ts: float, offset: int = 0, **kwargs: object) -> InputRecord:
    """A valid event, keyed by its user."""
    return record(wire(event_id, user, ts, **kwargs), user.encode(), offset)


def run(records: list[InputRecord], scorer: OnlineScorer, state: DictState, limit: int = LIMIT,
        max_request_bytes: int = MAX_REQUEST_BYTES, lap=None) -> BatchResult:
    """One batch, its state then written back as the worker writes it."""
    result = score_batch(records, scorer, state, limit, MAX_EVENT_BYTES, max_request_bytes, RECEIVED, lap,
                         clock=lambda: SCORED)
    state.write(result.state)
    return result


def sent(result: BatchResult) -> list[dict]:
    return [orjson.loads(value) for _, value in result.scores]


def reference(scorer: OnlineScorer, batches: list[list[InputRecord]]) -> list[list[OnlineScore]]:
    """The same events through decode_event -> UserHistory.append -> OnlineScorer.score, a copy per event."""
    histories: dict[str, UserHistory] = {}
    out = []
    for batch in batches:
        items = []
        for item in batch:
            decoded = decode_event(item.value, scorer.schema)
            history = histories.setdefault(decoded.user_id, UserHistory.empty(scorer.schema))
            position = history.append(decoded, LIMIT)
            items.append((history.copy(), position))
        out.append(scorer.score([h for h, _ in items], [p for _, p in items]))
    return out


def as_sent(score: OnlineScore) -> dict:
    """The fields a score record takes from an OnlineScore, as its JSON reads back."""
    return orjson.loads(orjson.dumps({"event_id": score.event_id, "user_id": score.user_id, "score": score.score,
                                      "encoder_score": score.encoder_score, "neighbours": score.neighbours,
                                      "explanation": score.explanation}))


def test_an_event_is_scored_into_its_score_record(scorer):
    state, stages = DictState(), []
    item = event("e1", "u1", 1_699_999_990.5, offset=41)
    result = run([item], scorer, state, lap=stages.append)

    [(key, _)] = result.scores
    [got] = sent(result)
    [[want]] = reference(scorer, [[item]])
    assert key == b"u1"
    assert {name: got[name] for name in as_sent(want)} == as_sent(want)
    assert got["artifact_version"] == scorer.version == "v000001"
    assert got["event_ts"] == 1_699_999_990.5
    assert got["source"] == {"topic": "events", "partition": 2, "offset": 41}
    assert got["timestamps"] == {"kafka": 1_700_000_041.0, "received": RECEIVED, "scored": SCORED}
    assert set(got) == {*as_sent(want), "artifact_version", "event_ts", "source", "timestamps"}

    assert stages == ["decode", "state", "featurise", "encode", "attach", "gnn"]
    [(user, history, partition)] = result.state
    assert (user, history.event_ids, partition) == ("u1", ("e1",), 2)
    assert result.timestamps == [1_700_000_041.0]
    assert result.neighbours.dtype == np.int64 and result.neighbours.tolist() == [want.neighbours]
    assert (result.scored, result.duplicates, result.repartitioned) == (1, 0, 0)
    assert result.dead_letters == [] and result.forwards == []


def _without_gap() -> bytes:
    value = fields("e1", "u1", 1.0)
    del value["gap"]
    return json.dumps(value).encode()


REFUSED = [
    ("tombstone", None),
    ("empty", b""),
    ("oversize", wire("e1", "u1", 1.0, pad="x" * MAX_EVENT_BYTES)),
    ("bad_json", b"{not json"),
    ("not_object", b"[1, 2]"),
    ("missing_field", _without_gap()),
    ("bad_type", wire("e1", "u1", 1.0, amount="lots")),
    ("non_finite", b'{"event_id": "e1", "user_id": "u1", "ts": 1.0, "amount": NaN, "gap": 3.0, "kind": "a"}'),
    ("long_text", wire("e1", "u1", 1.0, kind="x" * 300)),
    ("bad_timestamp", wire("e1", "u1", True)),
]


def test_every_decoder_reason_is_covered():
    assert sorted(reason for reason, _ in REFUSED) == sorted(REASONS)


@pytest.mark.parametrize(("reason", "value"), REFUSED, ids=[reason for reason, _ in REFUSED])
def test_a_refused_record_is_dead_lettered_as_it_arrived(scorer, reason, value):
    state = DictState()
    item = record(value, b"u1", offset=7)
    result = run([item, event("e2", "u2", 5.0, offset=8)], scorer, state)

    [refused] = result.dead_letters
    assert refused == Refused(reason, dead_letter(b"u1", value, reason, item.source, MAX_REQUEST_BYTES))
    assert (refused.letter.key, refused.letter.value) == (b"u1", value)
    assert dict(refused.letter.headers)["ecseq.reason"] == reason.encode()
    assert result.dead_letters_by_reason() == {reason: 1}
    assert [got["event_id"] for got in sent(result)] == ["e2"]  # the rest of the batch is scored
    assert [user for user, _, _ in result.state] == ["u2"] and set(state.histories) == {"u2"}


def test_a_dead_letter_fits_the_producers_request_size(scorer):
    value = wire("e1", "u1", 1.0, pad="x" * 70_000)
    result = run([record(value)], scorer, DictState(), max_request_bytes=HEADROOM + 1024)
    [(reason, letter)] = result.dead_letters
    assert reason == "oversize" and letter.value == value[:KEPT_BYTES["value"]]
    assert dict(letter.headers)["ecseq.truncated"] == b"value"


def test_an_id_reused_with_other_content_is_dead_lettered(scorer):
    state = DictState()
    run([event("e1", "u1", 10.0, amount=1.0)], scorer, state)
    reused = event("e1", "u1", 10.0, offset=1, amount=2.0)
    result = run([reused, event("e2", "u1", 20.0, offset=2)], scorer, state)

    assert result.dead_letters == [Refused(ID_REUSED, dead_letter(b"u1", reused.value, ID_REUSED, reused.source,
                                                                  MAX_REQUEST_BYTES))]
    assert [got["event_id"] for got in sent(result)] == ["e2"] and result.duplicates == 0
    history = state.histories["u1"]
    assert history.event_ids == ("e1", "e2") and history.event(0).numeric[0] == 1.0  # the first content stays


def test_an_event_older_than_a_full_history_is_too_late(scorer):
    state = DictState()
    run([event(f"e{i}", "u1", 10.0 * i, offset=i) for i in (1, 2, 3)], scorer, state, limit=3)
    before = state.histories["u1"].to_bytes()
    late = event("e0", "u1", 5.0, offset=4)
    result = run([late], scorer, state, limit=3)

    assert result.dead_letters == [Refused(TOO_LATE, dead_letter(b"u1", late.value, TOO_LATE, late.source,
                                                                 MAX_REQUEST_BYTES))]
    assert result.scores == [] and result.state == [] and result.timestamps == []
    assert state.histories["u1"].to_bytes() == before


def test_a_redelivered_event_is_scored_again_not_appended(scorer):
    state = DictState()
    first = run([event("e1", "u1", 10.0), event("e2", "u1", 20.0, offset=1)], scorer, state)
    again = run([event("e1", "u1", 10.0), event("e3", "u1", 30.0, offset=2)], scorer, state)

    assert [got["event_id"] for got in sent(again)] == ["e1", "e3"] and again.duplicates == 1
    assert sent(again)[0]["score"] == pytest.approx(sent(first)[0]["score"], abs=1e-6)  # the same window
    assert again.dead_letters == []
    assert state.histories["u1"].event_ids == ("e1", "e2", "e3")

    within = run([event("e4", "u1", 40.0, offset=3), event("e4", "u1", 40.0, offset=3)], scorer, state)
    assert [got["event_id"] for got in sent(within)] == ["e4", "e4"] and within.duplicates == 1
    assert sent(within)[0]["score"] == sent(within)[1]["score"]
    assert state.histories["u1"].event_ids == ("e1", "e2", "e3", "e4")


@pytest.mark.parametrize("key", [b"someone-else", None])
def test_a_record_not_keyed_by_its_user_is_forwarded_not_scored(scorer, key):
    state, stages = DictState(), []
    value = wire("e1", "u1", 10.0)
    result = run([record(value, key)], scorer, state, lap=stages.append)

    assert result.forwards == [(b"u1", value)] and result.repartitioned == 1
    assert result.scores == [] and result.state == [] and result.dead_letters == []
    assert result.scored == 0 and result.neighbours.tolist() == []
    assert state.histories == {}
    assert stages == ["decode", "state"]  # nothing to score


def test_events_of_one_user_in_one_batch_each_get_their_own_window(scorer):
    items = [event("a1", "u1", 10.0), event("a2", "u1", 20.0, offset=1, amount=80.0),
             event("a3", "u1", 15.0, offset=2, kind="c")]  # a3 is late: inserted before a2
    state = DictState()
    together = run(items, scorer, state)
    apart = [sent(run([item], scorer, DictState()))[0] for item in items]
    one_by_one = DictState()
    each = [sent(run([item], scorer, one_by_one))[0] for item in items]

    [(user, history, partition)] = together.state
    assert (user, history.event_ids, partition) == ("u1", ("a1", "a3", "a2"), 2)
    scores = [got["score"] for got in sent(together)]
    assert scores == pytest.approx([got["score"] for got in each], abs=1e-6)
    assert scores[1] != pytest.approx(apart[1]["score"], abs=1e-4)  # a2's window held a1
    assert [got["score"] for got in sent(together)] == [s.score for s in reference(scorer, [items])[0]]


def test_a_swap_between_batches_scores_each_batch_on_its_own_artifact(scorers):
    before, after = scorers
    state = DictState()
    items = [event("e1", "u1", 10.0), event("e2", "u1", 20.0, offset=1)]
    first = run(items[:1], before, state)
    second = run(items[1:], after, state)

    assert [got["artifact_version"] for got in (*sent(first), *sent(second))] == ["v000001", "v000002"]
    [_, [on_after]] = reference(after, [items[:1], items[1:]])
    [_, [on_before]] = reference(before, [items[:1], items[1:]])
    assert sent(second)[0]["score"] == on_after.score != on_before.score  # e2's window (e1, e2), on the new artifact
    assert state.histories["u1"].event_ids == ("e1", "e2")  # state carries over


def test_a_mixed_batch_counts_every_outcome_in_order(scorer):
    state = DictState()
    run([event("e1", "u1", 10.0), event("e2", "u1", 20.0, offset=1)], scorer, state)
    batch = [event("e1", "u1", 10.0, offset=2), record(None, offset=3), record(wire("e9", "u9", 1.0), b"u1", 4),
             event("e2", "u1", 20.0, offset=5, amount=99.0), record(b"{", offset=6), event("e3", "u1", 30.0, 7)]
    result = run(batch, scorer, state)

    assert [got["event_id"] for got in sent(result)] == ["e1", "e3"] and result.scored == 2
    assert result.timestamps == [1_700_000_002.0, 1_700_000_007.0]
    assert result.duplicates == 1 and result.repartitioned == 1
    assert [reason for reason, _ in result.dead_letters] == ["tombstone", "bad_json", ID_REUSED]  # decoding first
    assert result.dead_letters_by_reason() == {"tombstone": 1, "bad_json": 1, ID_REUSED: 1}
    assert len(result.neighbours) == 2
    assert state.histories["u1"].event_ids == ("e1", "e2", "e3")


def test_scores_equal_online_scorer_on_the_same_histories(scorer):
    rng = np.random.default_rng(3)
    batches, offset = [], 0
    for _ in range(3):
        batch = []
        for _ in range(20):
            user = f"u{rng.integers(5)}"
            batch.append(event(f"e{offset}", user, float(offset), offset, amount=float(rng.exponential(30.0)),
                               kind=str(rng.choice(["a", "b", "c", "z"]))))
            offset += 1
        batches.append(batch)
    state = DictState()
    got = [sent(run(batch, scorer, state)) for batch in batches]
    want = reference(scorer, batches)
    assert [len(batch) for batch in got] == [20, 20, 20]
    for mine, theirs in zip(got, want):
        assert [{name: out[name] for name in as_sent(score)} for out, score in zip(mine, theirs)] == \
            [as_sent(score) for score in theirs]
    assert len({out["user_id"] for batch in got for out in batch}) == 5
