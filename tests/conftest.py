"""Project-wide fixtures: one Apache Kafka broker per test session (with a SASL_SSL listener), started
only if a test asks; a small
generated event file and a store with one artifact trained through the real `ecseq train-encoder`
(once per session; tests that change a store work on their own copy)."""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.builds import FAST

if TYPE_CHECKING:
    from kafka_io.broker import KafkaCluster

_topic_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One Apache Kafka node on free loopback ports: PLAINTEXT at ``bootstrap``, SASL_SSL at
    ``sasl_ssl_bootstrap`` (``client_settings()`` gives a client's ECSEQ_* settings).

    Shared by every test of the session: use ``topic_names`` so tests do not see each other's records.
    """
    # Imported here: sessions without Kafka tests never load aiokafka.
    from kafka_io.broker import KafkaCluster

    root = tmp_path_factory.mktemp("kafka")
    cluster = KafkaCluster(nodes=1, sasl_ssl=root / "sasl-ssl", workdir=root / "nodes").start()
    try:
        yield cluster
    finally:
        cluster.stop()


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


@pytest.fixture(scope="session")
def events_frame():
    from ecseq.data.synthetic import generate_synthetic

    return generate_synthetic(n_users=400, days=60, seed=1)


@pytest.fixture(scope="session")
def events_csv(tmp_path_factory, events_frame) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.csv"
    events_frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, events_csv) -> Path:
    from ecseq_cli import main

    store = tmp_path_factory.mktemp("trained") / "store"
    code = main(["train-encoder", "--events", str(events_csv), "--store", str(store), "--epochs", "3", *FAST])
    assert code == 0
    return store


@pytest.fixture
def store(tmp_path, trained_store) -> Path:
    """A private copy of the trained store."""
    copy = tmp_path / "store"
    shutil.copytree(trained_store, copy)
    return copy
