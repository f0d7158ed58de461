"""The demo's verdict: online quality of the streamed scores against the replayed labels, latency, the
swap, the build, the dead letters; written to summary.json and printed.

Quality is measured on what the worker actually emitted (first score per event id), both its score
and the encoder-only score it carries, so the graph's contribution is compared on the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise

import numpy as np

from demo.builds import FORCED_WHY, Build, gate_line
from demo.progress import Seen
from demo.replay import ReplayPlan
from demo.stream import StreamResult
from ecseq.ranking import summarize

PERCENTILES = (50, 90, 99)
METRICS = (("auc", "AUC"), ("ap", "AP"), ("r_at_p90", "R@P0.9"))


def latency_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    """p50 / p90 / p99 / max in milliseconds; None without any value."""
    if len(seconds) == 0:
        return None
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    out = {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}
    return out | {"max": float(values.max())}


def quality(seen: Iterable[Seen], labels: dict[str, float]) -> dict:
    """AUC / AP / R@P0.9 of the streamed and the encoder-only score on the labelled scored events
    (None when the labels hold one class only: no ranking metric is defined)."""
    rows = np.array([(labels[s.event_id], s.score, s.encoder_score) for s in seen if s.event_id in labels],
                    dtype=np.float64).reshape(-1, 3)
    y = rows[:, 0].astype(np.int64)
    out: dict = {"labelled": len(y), "positives": int(y.sum())}
    two_classes = 0 < y.sum() < len(y)
    for column, name in ((1, "score"), (2, "encoder_score")):
        out[name] = summarize(y, rows[:, column]) if two_classes else None
    return out


def versions(seen: Iterable[Seen], labels: dict[str, float]) -> dict[str, dict]:
    """Per artifact version: events scored, when (worker clock), zero-neighbour share, quality."""
    groups: dict[str, list[Seen]] = {}
    for s in seen:
        groups.setdefault(s.version, []).append(s)
    return {version: {"events": len(group),
                      "first_scored": min(s.scored for s in group), "last_scored": max(s.scored for s in group),
                      "zero_neighbour_share": sum(s.neighbours == 0 for s in group) / len(group),
                      "median_score": float(np.median([s.score for s in group])),
                      "quality": quality(group, labels)}
            for version, group in sorted(groups.items())}


def swap(by_version: dict[str, dict], started: float) -> dict | None:
    """The first event scored by the second version, and whether every score of an older version was
    made before every score of a newer one (the worker swaps between batches, never back)."""
    names = list(by_version)
    if len(names) < 2:
        return None
    at = by_version[names[1]]["first_scored"]
    return {"from": names[0], "to": names[1], "at": _clock(at), "at_epoch": at,
            "seconds_into_replay": at - started,
            "ordered": all(by_version[a]["last_scored"] < by_version[b]["first_scored"] for a, b in pairwise(names))}


def build_summary(*, dataset: str, rate: float, plan: ReplayPlan, result: StreamResult, first: str,
                  urls: dict[str, str], running: bool, pids: dict[str, int], steps: dict[str, float],
                  wall_seconds: float) -> dict:
    seen = list(result.scores.seen.values())
    valid = [s for s in seen if s.event_id in plan.valid_ids]
    by_version = versions(valid, plan.labels)
    build: Build | None = result.build
    dead = dict(sorted(result.scores.dead_letters.items()))
    return {
        "dataset": dataset, "rate": rate, "first_version": first,
        "replay": {"events": len(plan.valid_ids), "malformed": sum(plan.injected.values()),
                   "labels": len(plan.labels), "seconds": result.replay.seconds, "started_at": _clock(result.started)},
        "scored": {"valid_events": len(plan.valid_ids), "scored": len(valid),
                   "missing": len(plan.valid_ids) - len(valid), "duplicates": result.scores.duplicates,
                   "complete": result.complete},
        "quality": quality(valid, plan.labels),
        "latency_ms": {"event_to_score": latency_ms([s.latency for s in valid]),
                       "event_to_read": latency_ms([s.read_latency for s in valid])},
        "versions": by_version,
        "swap": swap(by_version, result.started),
        "build": None if build is None else {
            "result": "published" if build.version else "refused", "version": build.version, "forced": build.forced,
            "why_forced": FORCED_WHY if build.forced else None,
            "refused": build.report.get("refused", []), "gate": build.report.get("gate"),
            "metrics": build.report.get("metrics"), "data": build.report.get("data"),
            "started_after_events": result.builder_step, "line": gate_line(build)},
        "dead_letters": {"by_reason": dead, "injected": dict(sorted(plan.injected.items())),
                         "as_injected": dead == plan.injected},
        "zero_neighbour_share": sum(s.neighbours == 0 for s in valid) / len(valid) if valid else None,
        "metrics_urls": urls, "running": running, "pids": pids,
        "step_seconds": steps, "wall_seconds": wall_seconds,
    }


def format_summary(summary: dict) -> str:
    """The summary as a few aligned lines for the terminal."""
    replay, scored = summary["replay"], summary["scored"]
    header = "".join(f"{title + ' score/enc':>20}" for _, title in METRICS)
    lines = [(f"summary: {summary['dataset']}, {replay['events']:,} events replayed at {summary['rate']:g}/s "
              f"({replay['malformed']} malformed), {summary['wall_seconds']:.0f} s in all"),
             f"  {'online quality':<24}{'events':>8}{'pos':>6}{header}"]
    rows = [("all scored events", summary["quality"])]
    rows += [(f"scored by {v}", info["quality"]) for v, info in summary["versions"].items()]
    for name, q in rows:
        cells = "".join(f"{_pair(q, key):>20}" for key, _ in METRICS)
        lines.append(f"  {name:<24}{q['labelled']:>8,}{q['positives']:>6,}{cells}")
    if len(summary["versions"]) > 1:
        medians = ", ".join(f"{v} {info['median_score']:.4f}" for v, info in summary["versions"].items())
        lines.append(f"  (each version scores on its own scale, median score {medians}: the pooled row mixes them;"
                     " compare within a version)")
    scored_ms, read_ms = summary["latency_ms"]["event_to_score"], summary["latency_ms"]["event_to_read"]
    if scored_ms:
        lines.append("  latency, event sent -> scored: " + ", ".join(f"{k} {v:.0f} ms" for k, v in scored_ms.items())
                     + f" (-> score read by the demo: p50 {read_ms['p50']:.0f} ms, p99 {read_ms['p99']:.0f} ms)")
    served = ", ".join(f"{v} {info['events']:,} events" for v, info in summary["versions"].items()) or "nothing"
    lines.append(f"  served: {served}")
    change = summary["swap"]
    if change:
        order = (f"every {change['from']} score came before every {change['to']} score" if change["ordered"]
                 else f"{change['from']} and {change['to']} scores interleave")
        lines.append(f"  swap: {change['from']} -> {change['to']} at {change['at']} "
                     f"({change['seconds_into_replay']:.1f} s into the replay); {order}")
    else:
        lines.append("  swap: none (the worker served one version throughout)")
    build = summary["build"]
    lines.append("  build: " + (build["line"] if build else "no verdict from the builder in time"))
    dead = summary["dead_letters"]
    reasons = ", ".join(f"{r} {n}" for r, n in dead["by_reason"].items()) or "none"
    check = "as injected" if dead["as_injected"] else f"injected: {dead['injected']}"
    lines.append(f"  dead letters: {reasons} ({check})")
    share = summary["zero_neighbour_share"]
    lines.append(f"  scored: {scored['scored']:,} of {scored['valid_events']:,} valid events, "
                 f"{scored['duplicates']:,} duplicates; zero-neighbour share "
                 + ("-" if share is None else f"{share:.1%}"))
    state = "up until Ctrl-C" if summary["running"] else "stopped now; --keep-running leaves them up"
    lines.append("  metrics: " + ", ".join(f"{name} {url}" for name, url in summary["metrics_urls"].items())
                 + f" ({state})")
    return "\n".join(lines)


def _pair(q: dict, key: str) -> str:
    if q["score"] is None:
        return "-"
    return f"{q['score'][key]:.4f} / {q['encoder_score'][key]:.4f}"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S.%f")[:-3]
