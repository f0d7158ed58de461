"""Micro-batching against a real broker: full batches while behind, small prompt ones while keeping up,
and a batch being joined never holds up a shutdown."""

from __future__ import annotations

import json
import time

from kafka_io.topics import produce_json, read_topic
from tests.processes import terminate

from .conftest import event_records

SIZE = 200


def _batches(worker) -> dict[str, float]:
    """The worker's batch-size histogram: cumulative bucket counts by bound, plus count and sum."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body = worker.get("/metrics")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "ecseq_worker_batch_size_bucket":
                out[sample.labels["le"]] = sample.value
            elif sample.name in ("ecseq_worker_batch_size_count", "ecseq_worker_batch_size_sum"):
                out[sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def _wait_scored(deployment, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while len(read_topic(deployment.bootstrap, deployment.topic("scores"))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} scores in {timeout} s"
        time.sleep(0.25)


def test_backlog_is_taken_in_full_batches_and_a_trickle_in_small_prompt_ones(deployment, events_frame):
    records = event_records(events_frame)
    backlog, trickle = records[:1000], records[1000:1040]
    produce_json(deployment.bootstrap, deployment.topic("events"), backlog)
    # a 2 ms window takes ~20 events at a time (Faust feeds the buffer at ~100 us an event): only joined
    # takes make batches of 100-200
    with deployment.worker(ECSEQ_BATCH_SIZE=str(SIZE), ECSEQ_BATCH_WITHIN="2ms") as worker:
        _wait_scored(deployment, len(backlog))
        behind = _batches(worker)
        assert behind["sum"] == len(backlog)
        assert behind["+Inf"] == behind[f"{SIZE:.1f}"]  # never more than ECSEQ_BATCH_SIZE
        assert behind[f"{SIZE:.1f}"] - behind["100.0"] >= 3  # most of the backlog went in full batches

        for start in range(0, len(trickle), 4):  # keeping up: 4 events every 100 ms
            produce_json(deployment.bootstrap, deployment.topic("events"), trickle[start:start + 4])
            time.sleep(0.1)
        _wait_scored(deployment, len(records[:1040]), timeout=10.0)
        kept_up = _batches(worker)
        assert kept_up["sum"] - behind["sum"] == len(trickle)
        assert kept_up["count"] - behind["count"] >= len(trickle) / 4  # not held back to be joined


def test_sigterm_while_a_batch_is_being_joined_scores_it_and_exits(deployment, events_frame):
    """Faust stops fetching, then waits for every taken event to be acknowledged: a batch held open
    for more events must still be scored, or shutdown (and a rebalance) would wait for ever."""
    records = event_records(events_frame)[:8000]
    produce_json(deployment.bootstrap, deployment.topic("events"), records)
    # batches of 1,000 need ~10 takes each, so the worker is joining most of the time
    with deployment.worker(ECSEQ_BATCH_SIZE="1000", ECSEQ_BATCH_WITHIN="5ms") as worker:
        deadline = time.monotonic() + 60
        while _batches(worker).get("count", 0) < 1:
            assert time.monotonic() < deadline, "no batch scored in 60 s"
            time.sleep(0.05)
        started = time.monotonic()
        assert terminate(worker.proc, timeout=30) == 0
        assert time.monotonic() - started < 15
    want = {value["event_id"] for _, value in records}
    assert len(_scored(deployment)) < len(want)  # stopped with work left, to be picked up
    with deployment.worker("w2"):  # the restart scores what the first left uncommitted
        deadline = time.monotonic() + 60
        while _scored(deployment) != want:
            missing = len(want - _scored(deployment))
            assert time.monotonic() < deadline, f"{missing} of {len(want)} events not scored after the restart"
            time.sleep(0.5)


def _scored(deployment) -> set[str]:
    return {json.loads(record.value)["event_id"] for record in read_topic(deployment.bootstrap,
                                                                          deployment.topic("scores"))}
