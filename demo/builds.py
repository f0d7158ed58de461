"""What the builder decided, read from the store: the newest build report, published or refused.

The demo's builder publishes with --force (see FORCED_WHY), so what the gate said is read from the
report and shown with its numbers every time: a refusal is never hidden behind the swap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from compression_builder.report import REFUSED_DIR, REPORT
from ecseq.artifacts import ArtifactStore

# Through Kafka the builder's read point moves with timing, so the demo's rebuild does not always
# pass the gate (how often: docs/results.md, "The demo's rebuild and the gate"). A demo run cannot
# count on a pass, so it publishes anyway to show the swap under load, and reports the verdict.
FORCED_WHY = ("forced by the demo so that a rebuilt version is always served; whether the gate passes "
              "depends on where the builder's read cuts the stream")


@dataclass(frozen=True)
class Build:
    version: str | None  # None: refused
    report: dict

    @property
    def forced(self) -> bool:
        """Published although the gate refused (the builder's --force)."""
        return self.version is not None and bool(self.report.get("refused"))


def newest_build(store: ArtifactStore, first: str) -> Build | None:
    """The newest build after `first` (the version train-encoder published), None while there is none."""
    found = [Build(v, _read(store.path(v) / REPORT)) for v in store.versions() if v > first]
    found += [Build(None, _read(path)) for path in (store.root / REFUSED_DIR).glob(f"*/{REPORT}")]
    found = [b for b in found if b.report]
    return max(found, key=lambda b: b.report.get("created_at", "")) if found else None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # being written: seen at the next look
        return {}


def gate_line(build: Build) -> str:
    """The gate's verdict and numbers in one line."""
    report = build.report
    gate = report.get("gate", {})
    metric, tolerance = gate.get("metric", "ap"), gate.get("tolerance", 0.0)
    numbers = ", ".join(f"{name} {values[metric]:.4f}" for name, values in report.get("metrics", {}).items()
                        if metric in values)
    holdout = report.get("data", {}).get("holdout", {})
    held = f" on {holdout.get('rows', 0):,} held-out labels ({holdout.get('positives', 0):,} positive)"
    refused = ", ".join(report.get("refused", []))
    if build.version is None:
        verdict = f"refused ({refused})"
    elif build.forced:
        verdict = f"{build.version} published although the gate refused it ({refused}): {FORCED_WHY}"
    else:
        verdict = f"{build.version} published, the gate passed it"
    return f"{verdict}; gate {metric.upper()} {numbers or 'not evaluated'} (tolerance {tolerance}){held}"
