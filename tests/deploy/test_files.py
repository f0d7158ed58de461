"""The deployment files, checked without a Docker engine: docker-compose.yml through
`docker-compose config`, the Prometheus files through promtool, the Grafana dashboard and the
alert rules against the metrics the project really exports, and the Dockerfile."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from ecseq.settings import parse_duration, variable
from ecseq_cli.settings import Settings
from kafka_io.jars import kafka_version

from .conftest import (
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    METRIC,
    ROOT,
    alert_rules,
    dashboard_queries,
    exported_metrics,
    load_yaml,
    run,
    tool,
)

SETTINGS_VARIABLES = {variable(field.name) for field in dataclasses.fields(Settings)}
TOPIC_FIELDS = ("events_topic", "scores_topic", "labels_topic", "dead_letter_topic", "artifacts_topic")


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker-compose.yml as docker-compose itself resolves it (anchors merged, paths absolute)."""
    done = run([tool("docker-compose"), "-f", str(COMPOSE), "config"])
    return yaml.safe_load(done.stdout)


def _by_command(services: dict, command: str) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("command") == [command]}


def _bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def _named_volumes(service: dict) -> dict[str, str]:
    """Container path -> named volume."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        if not source.startswith(("/", ".")):
            out[target] = source
    return out


def test_compose_file_is_valid_and_runs_two_workers_a_builder_and_kafka_in_kraft_mode(compose):
    run([tool("docker-compose"), "-f", str(COMPOSE), "config", "--quiet"])
    services = compose["services"]
    workers, builders = _by_command(services, "worker"), _by_command(services, "builder")
    assert len(workers) == 2 and len(builders) == 1, sorted(services)
    (builder,) = builders.values()

    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"  # the version the tests run
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, combined node
    assert not any("zookeeper" in name for name in services)
    # in-compose clients reach the broker as kafka:9092, the address every ecseq service is given
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for service in [*workers.values(), builder]:
        assert service["environment"]["ECSEQ_BROKER"] == "kafka:9092"

    # replicas: one consumer group, their own local state, one shared artifact store with the builder
    worker_envs = [w["environment"] for w in workers.values()]
    assert len({e["ECSEQ_APP_ID"] for e in worker_envs}) == 1
    stores = {e["ECSEQ_STORE"] for e in [*worker_envs, builder["environment"]]}
    assert len(stores) == 1
    (store,) = stores
    store_volumes = {_named_volumes(s).get(store) for s in [*workers.values(), builder]}
    assert len(store_volumes) == 1 and None not in store_volumes, "workers and builder must share the store volume"
    data_volumes = [_named_volumes(w)[e["ECSEQ_DATA_DIR"]] for w, e in zip(workers.values(), worker_envs)]
    assert len(set(data_volumes)) == 2

    # reachable from the other containers, health-checked on /health
    for worker, env in zip(workers.values(), worker_envs):
        assert env["ECSEQ_WEB_HOST"] == "0.0.0.0"
        assert f":{env['ECSEQ_WEB_PORT']}/health" in " ".join(worker["healthcheck"]["test"])
    assert builder["environment"]["ECSEQ_METRICS_HOST"] == "0.0.0.0"
    assert builder["environment"].get("ECSEQ_BUILDER_METRICS_PORT", "9102") == "9102"


def test_compose_publishes_only_loopback_ports_and_none_of_the_ecseq_services(compose):
    """Prometheus scrapes the workers and the builder inside the compose network: their web ports
    stay there; what a person opens on the host (Kafka, Prometheus, Grafana) is on 127.0.0.1."""
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published[name] = published.get(name, []) + [port if isinstance(port, str) else port["host_ip"]]
    assert set(published) == {"kafka", "prometheus", "grafana"}, published
    for name, ports in published.items():
        assert all(port.startswith("127.0.0.1") for port in ports), (name, ports)


def test_compose_configures_ecseq_only_through_real_settings_variables(compose):
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        ecseq = {k: str(v) for k, v in env.items() if k.startswith("ECSEQ_")}
        unknown = sorted(set(ecseq) - SETTINGS_VARIABLES)
        assert not unknown, f"{name}: not Settings fields: {unknown}"
        settings = Settings.from_env(ecseq)  # every value has the field's type
        for field in ("build_every", "build_since", "batch_within", "swap_check_every", "session_timeout"):
            parse_duration(getattr(settings, field))
    dockerfile_env = re.findall(r"\b(ECSEQ_[A-Z_]+)=", (DEPLOY / "Dockerfile").read_text())
    assert dockerfile_env and set(dockerfile_env) <= SETTINGS_VARIABLES


def test_compose_creates_the_topics_the_services_use(compose):
    services = compose["services"]
    script = services["topics"]["command"][0]
    assert "kafka-topics.sh" in script and services["topics"]["image"] == services["kafka"]["image"]
    defaults = Settings()
    expected = {getattr(defaults, field) for field in TOPIC_FIELDS}
    assert set(re.findall(r"\becseq\.[a-z-]+\b", script)) == expected
    assert re.search(rf"{re.escape(defaults.artifacts_topic)}\s+--config cleanup\.policy=compact", script)
    assert "--partitions 4" in script
    for service in [*_by_command(services, "worker").values(), *_by_command(services, "builder").values()]:
        env = service["environment"]
        for field in TOPIC_FIELDS:
            assert env.get(variable(field), getattr(defaults, field)) in expected
    # the services wait for the topics
    for name in ("builder", *_by_command(services, "worker")):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_worker_and_builder_run_the_image_built_from_deploy_dockerfile(compose):
    services = compose["services"]
    ecseq = {**_by_command(services, "worker"), **_by_command(services, "builder")}
    images = set()
    for name, service in ecseq.items():
        build = service["build"]
        assert Path(build["context"]) == ROOT, name
        assert (Path(build["context"]) / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile", name
        images.add(service["image"])
    assert len(images) == 1  # built once, tagged once


def test_prometheus_and_grafana_mount_files_that_exist_and_point_at_the_services(compose):
    services = compose["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    mounts = _bind_mounts(prometheus) | _bind_mounts(grafana)
    assert mounts and all(path.exists() for path in mounts.values()), mounts

    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_in_container = PurePosixPath(config_arg.split("=", 1)[1])
    prom_mounts = _bind_mounts(prometheus)
    assert prom_mounts[str(config_in_container)] == DEPLOY / "prometheus.yml"
    config = load_yaml(DEPLOY / "prometheus.yml")
    for rule_file in config["rule_files"]:  # relative to the config file, in the container as here
        assert prom_mounts[str(config_in_container.parent / rule_file)] == DEPLOY / rule_file

    # every scrape target is a compose service on the port its process listens on
    ports = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        if service.get("command") == ["worker"]:
            ports[name] = env.get("ECSEQ_WEB_PORT", str(Settings.web_port))
        elif service.get("command") == ["builder"]:
            ports[name] = env.get("ECSEQ_BUILDER_METRICS_PORT", str(Settings.builder_metrics_port))
    jobs = {}
    for scrape in config["scrape_configs"]:
        targets = [t for static in scrape["static_configs"] for t in static["targets"]]
        jobs[scrape["job_name"]] = targets
        for target in targets:
            host, port = target.rsplit(":", 1)
            assert ports.get(host) == port, f"{scrape['job_name']}: {target} is not a compose service's port"
    assert sorted(jobs) == ["ecseq-builder", "ecseq-worker"]
    assert len(jobs["ecseq-worker"]) == 2 and len(jobs["ecseq-builder"]) == 1

    # Grafana: the provisioned data source is the compose Prometheus; the dashboards folder is mounted
    grafana_mounts = _bind_mounts(grafana)
    provisioning = grafana_mounts["/etc/grafana/provisioning"]
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(provisioning / "dashboards" / "ecseq.yml")["providers"]
    assert grafana_mounts[provider["options"]["path"]] == DASHBOARD.parent


@pytest.mark.parametrize("args", [
    ["check", "config", "deploy/prometheus.yml"],
    ["check", "rules", "deploy/alerts.yml"],
    ["test", "rules", "deploy/alerts.test.yml"],
], ids=["check-config", "check-rules", "test-rules"])
def test_promtool_accepts_the_prometheus_files(args):
    run([tool("promtool"), *args])


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    tests = load_yaml(DEPLOY / "alerts.test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fired, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    for name in names:
        assert name in fired, f"no test makes {name} fire"
        assert name in quiet, f"no test shows {name} quiet"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    required = {"EcseqEventToScoreLatencyHigh", "EcseqConsumerLagGrowing", "EcseqArtifactTooOld",
                "EcseqBuilderFailing", "EcseqBuilderNoRecentSuccess", "EcseqDeadLetterSpike",
                "EcseqArtifactSwapRefused", "EcseqWorkerDown"}
    assert required <= set(names)


def _check_expression(where: str, expr: str, exported: dict[str, set[str]]) -> set[str]:
    """Metric names in `expr`; each must be exported, with the labels the expression uses."""
    used = set(METRIC.findall(expr))
    missing = used - set(exported)
    assert not missing, f"{where}: not exported by the project: {sorted(missing)} in {expr}"
    allowed = {"job", "instance"} | set().union(*(exported[name] for name in used)) if used else {"job", "instance"}
    for name, matchers in re.findall(r"\b(ecseq_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            assert label in exported[name] | {"job", "instance"}, f"{where}: {name} has no label {label}"
    for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            assert label in allowed, f"{where}: groups by {label}, which none of {sorted(used)} has"
    return used


def test_alerts_and_dashboard_use_only_metrics_the_project_exports():
    exported = exported_metrics()
    assert "ecseq_worker_events_total" in exported and "ecseq_worker_artifact_info" in exported  # suffixes applied
    used = set()
    for rule in alert_rules():
        used |= _check_expression(rule["alert"], rule["expr"], exported)
    for title, expr in dashboard_queries():
        used |= _check_expression(title, expr, exported)
    # what an on-call person needs is on the dashboard or behind an alert
    assert {"ecseq_worker_event_to_score_seconds_bucket", "ecseq_worker_stage_duration_seconds_bucket",
            "ecseq_worker_events_total", "ecseq_worker_dead_letters_total", "ecseq_worker_consumer_lag",
            "ecseq_worker_artifact_info", "ecseq_worker_artifact_created_timestamp_seconds",
            "ecseq_worker_swaps_total", "ecseq_worker_zero_neighbour_events_total", "ecseq_worker_batch_size_bucket",
            "ecseq_builder_last_success_timestamp_seconds", "ecseq_builder_last_publish_timestamp_seconds",
            "ecseq_builder_evaluation", "ecseq_builder_builds_total"} <= used


def test_dashboard_parses_and_every_panel_has_a_query():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['title']!r} has an empty query"
            assert not re.search(r"\$(?!__rate_interval|__interval|__range)\w+", target["expr"]), \
                f"panel {panel['title']!r} uses an undefined variable"
    # nothing outside the 24-column grid
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_dockerfile_runs_as_non_root_and_installs_the_pinned_cpu_torch():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms and all(arg.split()[0] == "python:3.11-slim" for arg in froms)
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    users = [arg for op, arg in instructions[final:] if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert instructions[-1] != ("USER", "root")

    pin = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
               if d.startswith("torch=="))
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    torch_install = re.search(r"pip install --index-url (\S+) (torch==\S+)", runs)
    assert torch_install, "torch is not installed from a separate index"
    assert torch_install.group(1) == "https://download.pytorch.org/whl/cpu"
    assert torch_install.group(2) == f"{pin}+cpu"
    assert re.search(r"pip install \.(\s|$)", runs) and "[dev]" not in runs
    assert runs.index(torch_install.group(0)) < runs.index("pip install . ")  # torch first, so pip keeps it
    assert ("ENTRYPOINT", '["ecseq"]') in instructions

    # what the image copies is in the build context and not excluded by .dockerignore
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs", "bench", "artifacts", "worker-data", "tests"} <= ignored
    packages = {"ecseq", "ecseq_cli", "worker", "compression_builder", "kafka_io"}
    copied = set()
    for op, arg in instructions:
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert source.split("/")[0] not in ignored, f"{source} is excluded by .dockerignore"
                copied.add(source)
    assert packages | {"pyproject.toml", "README.md"} <= copied
