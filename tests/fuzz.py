"""Settings for the property-based (fuzz) tests: a bounded, repeatable run in CI, a long random one
with ECSEQ_FUZZ=long (`make fuzz`), where every test tries LONG_FACTOR times more inputs."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("ECSEQ_FUZZ") == "long"
LONG_FACTOR = 100


def fuzz(examples: int) -> settings:
    """`examples` inputs in CI (derandomized: the same ones every run), LONG_FACTOR times as many,
    drawn at random, in the long run."""
    return settings(max_examples=examples * (LONG_FACTOR if LONG else 1), derandomize=not LONG, deadline=None,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# any text, lone surrogates included (what a JSON "\ud800" escape decodes to)
any_text = st.text(st.characters(exclude_categories=[]), max_size=12)
# any JSON-ish value, odd numbers included
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
                | st.floats(allow_nan=True, allow_infinity=True) | any_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(any_text, inner, max_size=3), max_leaves=8)
