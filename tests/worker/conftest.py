"""Real worker processes (`ecseq worker`) against the session's broker, each test with its own topics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kafka_io.broker import free_port
from kafka_io.topics import ensure_topics
from tests.processes import child

FEATURES = ("amount", "hour", "hours_since_prev", "mcc", "device", "country", "channel")


@dataclass
class Deployment:
    """Topic names, store and state dir shared by the worker processes of one test."""

    env: dict[str, str]
    bootstrap: str
    tmp: Path

    def topic(self, name: str) -> str:
        return self.env[f"ECSEQ_{name.upper()}_TOPIC"]

    @contextmanager
    def worker(self, name: str = "w1", wait_ready: bool = True, **extra: str) -> Iterator[WorkerProcess]:
        port = free_port()
        env = {**os.environ, **self.env, "ECSEQ_WEB_PORT": str(port), "ECSEQ_DATA_DIR": str(self.tmp / name),
               "PYTHONUNBUFFERED": "1", **extra}
        log = self.tmp / f"{name}.log"
        with child([sys.executable, "-m", "ecseq_cli", "worker", "--loglevel", "info"], env=env,
                   stdout=log.open("a"), stderr=subprocess.STDOUT) as proc:
            process = WorkerProcess(proc, f"http://127.0.0.1:{port}", log)
            if wait_ready:
                process.wait_ready()
            yield process


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                status, body = self.get("/ready")
            except OSError:
                status = 0
            if status == 200:
                return json.loads(body)
            time.sleep(0.25)
        raise AssertionError("worker not ready in time:\n" + self.log.read_text(errors="replace")[-3000:])


@pytest.fixture
def deployment(broker, topic_names, store, tmp_path) -> Deployment:
    env = {"ECSEQ_BROKER": broker.bootstrap, "ECSEQ_STORE": str(store), "ECSEQ_STATE_STORE": "memory://",
           "ECSEQ_SWAP_CHECK_EVERY": "1s", "ECSEQ_PARTITIONS": "4",
           "ECSEQ_APP_ID": topic_names("app")}
    for name in ("events", "scores", "labels", "dead_letter", "artifacts"):
        env[f"ECSEQ_{name.upper()}_TOPIC"] = topic_names(name)
    ensure_topics(broker.bootstrap, {env[f"ECSEQ_{n.upper()}_TOPIC"]: 4 for n in ("events", "scores", "dead_letter")}
                  | {env["ECSEQ_ARTIFACTS_TOPIC"]: 1})
    return Deployment(env, broker.bootstrap, tmp_path)


def event_records(frame) -> list[tuple[str, dict]]:
    """(key, JSON value) per event row: keyed by user, missing values as null."""
    out = []
    for row in frame.to_dict("records"):
        value = {"event_id": row["event_id"], "user_id": row["user_id"], "ts": float(row["ts"])}
        for name in FEATURES:
            v = row[name]
            value[name] = None if isinstance(v, float) and math.isnan(v) else v
        out.append((row["user_id"], value))
    return out
