"""observe_many fills a histogram exactly as one observe per value does."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from worker.internals import observe_many
from worker.metrics import END_TO_END_BUCKETS


def _histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("latency_seconds", "test", buckets=END_TO_END_BUCKETS, registry=registry)


def _samples(histogram: Histogram) -> dict:
    """Bucket counts by bound, count and sum (not the creation time)."""
    return {(m.name, m.labels.get("le")): m.value for m in histogram.collect()[0].samples
            if not m.name.endswith("_created")}


def test_observe_many_equals_one_observe_per_value():
    rng = np.random.default_rng(0)
    # on the bounds, between them, below the first, beyond the last finite one, and NaN
    values = np.concatenate([np.array(END_TO_END_BUCKETS), rng.exponential(0.05, 500), [0.0, 1e-9, 1e6, np.nan]])
    one_by_one, many = CollectorRegistry(), CollectorRegistry()
    single, bulk = _histogram(one_by_one), _histogram(many)
    for value in values[:-1]:  # NaN would make the sums unequal (NaN != NaN); its bucket is checked below
        single.observe(float(value))
    observe_many(bulk, values[:-1])
    want, got = _samples(single), _samples(bulk)
    assert got.pop(("latency_seconds_sum", None)) == pytest.approx(want.pop(("latency_seconds_sum", None)), rel=1e-12)
    assert got == want and want[("latency_seconds_bucket", "0.05")] > 0

    observe_many(bulk, values[-1:])  # NaN: in no bucket, as observe leaves it
    observe_many(bulk, np.array([]))
    assert _samples(bulk)[("latency_seconds_count", None)] == len(values) - 1
