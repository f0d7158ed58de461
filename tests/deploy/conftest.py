"""The deploy tests: paths, the Debian tools they run, the metric names the project exports, and
(re-exported from tests/worker) the `deployment` fixture that starts real `ecseq worker` processes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.worker.conftest import deployment  # noqa: F401  (real workers against the session's broker)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ecseq.json"
# Grafana's interval variables, replaced by a fixed window wherever PromQL is run or parsed
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "1h"}
METRIC = re.compile(r"\b(ecseq_[a-z0-9_]+)\b")


def tool(name: str) -> str:
    """Path of a Debian tool the Makefile's `system-tools` target installs; fail (not skip) without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make system-tools` installs it (Debian packages docker-compose, prometheus)")
    return path


def run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    done = subprocess.run(args, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the Grafana dashboard, Grafana variables substituted."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], substitute(target["expr"])))
    return queries


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(DEPLOY / "alerts.yml")["groups"] for rule in group["rules"]]


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def exported_metrics() -> dict[str, set[str]]:
    """Every sample name the worker and the builder can export, with its label names.

    Built from the real metric objects: each labelled metric gets one child, the Info its value,
    then the registries say what they expose (prometheus-client adds _total/_created to counters,
    _bucket/_sum/_count to histograms, _info to an Info).
    """
    from prometheus_client.metrics import MetricWrapperBase

    from compression_builder.metrics import BuilderMetrics
    from worker.metrics import WorkerMetrics

    worker, builder = WorkerMetrics(), BuilderMetrics()
    worker.served("v000001", 1.0)
    names: dict[str, set[str]] = {}
    for metrics in (worker, builder):
        for collector in vars(metrics).values():
            labels = getattr(collector, "_labelnames", ())  # declared label names (no public accessor)
            if isinstance(collector, MetricWrapperBase) and labels:
                collector.labels(*["x"] * len(labels))
        for family in metrics.registry.collect():
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names
