"""Shared fixtures: a small generated event file and a store with one trained artifact.

The store is trained once per session (in-process, through the real `ecseq train-encoder`);
tests that change a store work on their own copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ecseq.data.synthetic import generate_synthetic
from ecseq_cli import main

# small enough to train in seconds; the flags every builder test passes
FAST = ["--quiet", "--k", "40", "--positive-k", "10", "--gnn-epochs", "15", "--threads", "1"]


@pytest.fixture(scope="session")
def events_frame():
    return generate_synthetic(n_users=400, days=60, seed=1)


@pytest.fixture(scope="session")
def events_csv(tmp_path_factory, events_frame) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.csv"
    events_frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, events_csv) -> Path:
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
