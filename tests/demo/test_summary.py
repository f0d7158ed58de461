"""The demo's numbers from score records: quality per score, latency, the swap, the live line."""

from __future__ import annotations

import io

import numpy as np
import pytest

from demo.builds import Build, gate_line
from demo.progress import Display, Scores, Seen
from demo.summary import latency_ms, quality, swap, versions
from ecseq.ranking import summarize


def seen(i: int, version: str, score: float, encoder: float, scored: float, neighbours: int = 10) -> Seen:
    return Seen(f"e{i}", score, encoder, version, neighbours, sent=scored - 0.02, scored=scored, read=scored + 0.05)


def test_quality_scores_both_columns_against_the_labels_of_scored_events_only() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(float)
    score, encoder = y + rng.normal(0, 0.5, 400), y + rng.normal(0, 1.5, 400)
    records = [seen(i, "v1", score[i], encoder[i], float(i)) for i in range(400)]
    labels = {f"e{i}": y[i] for i in range(400)} | {"never-scored": 1.0}
    out = quality(records + [seen(999, "v1", 0.5, 0.5, 1.0)], labels)  # e999 has no label: left out
    assert out["labelled"] == 400 and out["positives"] == int(y.sum())
    assert out["score"] == summarize(y.astype(int), score)
    assert out["encoder_score"] == summarize(y.astype(int), encoder)
    assert out["score"]["auc"] > out["encoder_score"]["auc"]
    assert quality(records[:3], {"e0": 0.0, "e1": 0.0, "e2": 0.0})["score"] is None  # one class: no AUC


def test_latency_percentiles_are_in_milliseconds() -> None:
    out = latency_ms([0.001 * i for i in range(1, 101)])
    assert out == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01, "max": 100.0})
    assert latency_ms([]) is None


def test_the_swap_is_the_first_score_of_the_new_version_and_checks_the_order() -> None:
    records = [seen(i, "v000001", 0.1, 0.1, 100.0 + i) for i in range(5)]
    records += [seen(5 + i, "v000002", 0.2, 0.1, 105.5 + i, neighbours=0 if i == 0 else 3) for i in range(3)]
    by_version = versions(records, {})
    assert {v: info["events"] for v, info in by_version.items()} == {"v000001": 5, "v000002": 3}
    assert by_version["v000002"]["zero_neighbour_share"] == pytest.approx(1 / 3)
    change = swap(by_version, started=100.0)
    assert change["from"] == "v000001" and change["to"] == "v000002"
    assert change["at_epoch"] == 105.5 and change["seconds_into_replay"] == 5.5 and change["ordered"]
    late_v1 = records + [seen(9, "v000001", 0.1, 0.1, 106.0)]  # an old-version score after the swap
    assert not swap(versions(late_v1, {}), started=100.0)["ordered"]
    assert swap(versions(records[:5], {}), started=100.0) is None


def test_a_forced_publish_and_a_refusal_both_show_the_gates_numbers() -> None:
    report = {"gate": {"metric": "ap", "tolerance": 0.005}, "refused": ["worse_than_serving"],
              "metrics": {"candidate": {"ap": 0.1}, "encoder": {"ap": 0.09}, "serving": {"ap": 0.12}},
              "data": {"holdout": {"rows": 500, "positives": 20}}}
    forced, refused = gate_line(Build("v000002", report)), gate_line(Build(None, report))
    for line in (forced, refused):
        assert "worse_than_serving" in line and "candidate 0.1000" in line and "serving 0.1200" in line
    assert "forced" in forced and refused.startswith("refused")
    assert "the gate passed" in gate_line(Build("v000002", report | {"refused": []}))


def test_the_live_line_is_printed_every_few_seconds_off_a_terminal() -> None:
    out, scores = io.StringIO(), Scores()
    scores.add_score({"event_id": "e1", "score": 0.2, "encoder_score": 0.1, "artifact_version": "v000001",
                      "neighbours": 4, "timestamps": {"kafka": 9.98, "received": 9.99, "scored": 10.0}}, 10.05)
    scores.add_score({"event_id": "e1", "score": 0.2, "encoder_score": 0.1, "artifact_version": "v000001",
                      "neighbours": 4, "timestamps": {"kafka": 9.98, "received": 9.99, "scored": 10.0}}, 10.06)
    assert scores.duplicates == 1 and scores.versions == {"v000001": 1}
    display = Display(out)
    for now in (10.1, 11.0, 14.0, 15.2):
        display.update(f"line at {now}", now)
    display.note("a step")
    assert out.getvalue().splitlines() == ["line at 10.1", "line at 15.2", "a step"]
