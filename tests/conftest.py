"""Project-wide fixtures: one real dev broker per test session, started only if a test asks."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kafka_io.broker import DevBroker

_topic_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevBroker]:
    """A Tansu broker on a free loopback port; its log is in the session's tmp dir.

    Memory storage and shared by every test of the session: use ``topic_names`` so
    tests do not see each other's records.
    """
    # Imported here: sessions without Kafka tests never load aiokafka.
    from kafka_io.broker import DevBroker

    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    dev = DevBroker(port=0, log_path=log_path).start()
    try:
        yield dev
    finally:
        dev.stop()


class TopicNames:
    """Makes topic names unique to one test: ``topic_names("events")`` -> ``events.test_x.7``."""

    def __init__(self, test_name: str) -> None:
        # Kafka allows [a-zA-Z0-9._-] and 249 characters.
        self._slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", test_name).strip("-")[:100]

    def __call__(self, base: str = "topic") -> str:
        return f"{base}.{self._slug}.{next(_topic_counter)}"


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> TopicNames:
    return TopicNames(request.node.name)
