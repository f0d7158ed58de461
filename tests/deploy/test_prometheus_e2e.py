"""A real Prometheus server, run with the project's own deploy/prometheus.yml and
alert rules (local targets swapped in), scrapes a real worker and a real builder service while
events stream through; then PromQL answers what the alerts and the dashboard ask."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ecseq.artifacts import ArtifactStore
from kafka_io.broker import die_with_parent, free_port
from kafka_io.topics import produce_json, read_topic
from tests.processes import child
from tests.worker.conftest import event_records

from .conftest import DEPLOY, dashboard_queries, load_yaml, tool

T = TypeVar("T")
SCRAPE = "1s"
EVENTS = 300


class PromAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:  # a bad query is a 400 with a JSON error body
            return json.loads(err.read())

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]


def _until(what: str, probe: Callable[[], T | None], timeout: float, logs: list[Path]) -> T:
    """probe() until it returns something other than None/False, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs if log.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def _local_config(tmp: Path, targets: dict[str, str]) -> Path:
    """deploy/prometheus.yml with its jobs and rule files kept, local targets and a 1 s interval."""
    config = load_yaml(DEPLOY / "prometheus.yml")
    config["global"] = {**config.get("global", {}), "scrape_interval": SCRAPE, "evaluation_interval": SCRAPE}
    config["rule_files"] = [str((DEPLOY / rule_file).resolve()) for rule_file in config["rule_files"]]
    assert sorted(scrape["job_name"] for scrape in config["scrape_configs"]) == sorted(targets)
    for scrape in config["scrape_configs"]:
        scrape["static_configs"] = [{"targets": [targets[scrape["job_name"]]]}]
    path = tmp / "prometheus.yml"
    path.write_text(json.dumps(config, indent=1))  # YAML is a superset of JSON
    return path


def _finite(api: PromAPI, expr: str) -> float | None:
    result = api.vector(expr)
    if result and math.isfinite(value := float(result[0]["value"][1])):
        return value
    return None


def test_prometheus_scrapes_worker_and_builder_and_answers_alerts_and_dashboard(deployment, store, events_frame,
                                                                               tmp_path):
    prometheus = tool("prometheus")
    builder_port, prom_port = free_port(), free_port()
    builder_log, prom_log = tmp_path / "builder.log", tmp_path / "prometheus.log"
    env = {**os.environ, **deployment.env, "PYTHONUNBUFFERED": "1"}
    builder_cmd = [sys.executable, "-m", "ecseq_cli", "builder", "--kafka", deployment.bootstrap, "--every", "1h",
                   "--metrics-port", str(builder_port), "--metrics-host", "127.0.0.1", "--store", str(store),
                   "--threads", "1"]
    records = event_records(events_frame.sort_values("ts", kind="stable").head(EVENTS))
    expected_version = ArtifactStore(store).current()

    with child(builder_cmd, env=env, stdout=builder_log.open("w"), stderr=subprocess.STDOUT,
               preexec_fn=die_with_parent()) as builder, deployment.worker() as worker:
        logs = [builder_log, worker.log, prom_log]
        assert builder.poll() is None, builder_log.read_text()
        config = _local_config(tmp_path, {"ecseq-worker": worker.url.removeprefix("http://"),
                                          "ecseq-builder": f"127.0.0.1:{builder_port}"})
        with child([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                   stdout=prom_log.open("w"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent()) as server:
            api = PromAPI(f"http://127.0.0.1:{prom_port}")

            def ready() -> bool:
                assert server.poll() is None, prom_log.read_text()
                try:
                    return api.get("/api/v1/status/buildinfo")["status"] == "success"
                except OSError:
                    return False

            _until("Prometheus to answer", ready, 30, logs)
            # both jobs scraped (the worker's histograms at zero: the baseline for rate())
            _until("both targets up", lambda: {r["metric"]["job"] for r in api.vector("up == 1")}
                   == {"ecseq-worker", "ecseq-builder"}, 30, logs)

            for start in range(0, EVENTS, 100):  # a short stream over a few scrapes
                produce_json(deployment.bootstrap, deployment.topic("events"), records[start:start + 100])
                time.sleep(0.5)
            _until(f"{EVENTS} scores", lambda: len(read_topic(deployment.bootstrap, deployment.topic("scores")))
                   >= EVENTS, 60, logs)
            scored = 'sum(ecseq_worker_events_total{outcome="scored"})'
            _until("the scores in Prometheus", lambda: (_finite(api, scored) or 0) >= EVENTS, 30, logs)

            p99 = _until("a finite p99", lambda: _finite(api, "histogram_quantile(0.99, sum by (le) "
                                                              "(rate(ecseq_worker_event_to_score_seconds_bucket[30s])))"),
                         15, logs)
            assert 0 < p99 < 60

            (info,) = api.vector("ecseq_worker_artifact_info")
            assert info["metric"]["version"] == expected_version and info["metric"]["job"] == "ecseq-worker"
            (builder_up,) = api.vector('up{job="ecseq-builder"}')
            assert builder_up["value"][1] == "1"
            assert {r["metric"]["stage"] for r in api.vector("ecseq_worker_stage_duration_seconds_count")} >= {
                "decode", "state", "featurise", "encode", "attach", "gnn", "produce"}

            # every query of the Grafana dashboard is valid PromQL; those about the stream have data
            empty = set()
            for title, expr in dashboard_queries():
                answer = api.query(expr)
                assert answer["status"] == "success", f"panel {title!r}: {expr}: {answer.get('error')}"
                if not answer["data"]["result"]:
                    empty.add(title)
            assert not empty & {"Event-to-score latency (SLO p99 < 50 ms)", "Per-stage p99 per micro-batch",
                                "Events by outcome", "Micro-batch size", "Served artifact version",
                                "Served artifact age", "Workers up", "Builder up"}, empty

            # the alert rules were loaded from deploy/alerts.yml and evaluate without errors
            def rules_evaluated() -> list[dict] | None:
                groups = api.get("/api/v1/rules")["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                return rules if rules and all(rule.get("lastEvaluation", "").startswith("2") and
                                              rule["health"] != "unknown" for rule in rules) else None

            rules = _until("the alert rules to be evaluated", rules_evaluated, 15, logs)
            expected_rules = {rule["alert"] for group in load_yaml(DEPLOY / "alerts.yml")["groups"]
                              for rule in group["rules"]}
            assert {rule["name"] for rule in rules} == expected_rules
            assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
            # with no labels on the topic the builder's first round fails: a counter born at 1, which
            # increase() alone cannot see; the rule must fire on it all the same
            if api.vector('ecseq_builder_builds_total{result="failed"}'):
                _until("EcseqBuilderFailing to fire", lambda: api.vector(
                    'ALERTS{alertname="EcseqBuilderFailing", alertstate="firing"}'), 15, logs)
        assert builder.poll() is None, builder_log.read_text()
