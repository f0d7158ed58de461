"""Settings: each process reads its own parts from ECSEQ_* variables; the `ecseq` command composes them."""

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compression_builder.settings import BuilderSettings
from ecseq.errors import DataError
from ecseq.settings import StoreSettings, parse_duration, variable
from ecseq_cli.settings import Settings
from tests.fuzz import fuzz
from worker.settings import WorkerSettings


def test_defaults_and_environment_overrides():
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env({"ECSEQ_STORE": "/srv/artifacts", "ECSEQ_KEEP_VERSIONS": "9",
                                  "ECSEQ_GATE_TOLERANCE": "0.02", "OTHER": "x"})
    assert (settings.store, settings.keep_versions, settings.gate_tolerance) == ("/srv/artifacts", 9, 0.02)
    assert variable("artifacts_topic") == "ECSEQ_ARTIFACTS_TOPIC"


def test_each_process_reads_only_its_own_parts():
    env = {"ECSEQ_APP_ID": "scorer", "ECSEQ_BUILD_EVERY": "1h", "ECSEQ_BROKER": "kafka:9092", "ECSEQ_STORE": "/s"}
    worker, builder = WorkerSettings.from_env(env), BuilderSettings.from_env(env)
    assert (worker.app_id, worker.broker, worker.store) == ("scorer", "kafka:9092", "/s")
    assert (builder.build_every, builder.broker, builder.store) == ("1h", "kafka:9092", "/s")
    assert not hasattr(worker, "build_every") and not hasattr(builder, "app_id")
    assert not hasattr(StoreSettings(), "broker")  # the core's part knows no Kafka
    with pytest.raises(DataError, match="ECSEQ_BATCH_SIZE=0: must be a number from 1 to 100000"):
        WorkerSettings(batch_size=0)  # each part's rules apply in every composition


def test_a_bad_value_names_the_variable():
    with pytest.raises(DataError, match="ECSEQ_KEEP_VERSIONS='many' is not a valid int"):
        Settings.from_env({"ECSEQ_KEEP_VERSIONS": "many"})


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("15m", 900.0), ("2h", 7200.0), ("7d", 604800.0),
                                               ("250ms", 0.25), ("90", 90.0), (" 1.5m ", 90.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-5m", "soon", "5 weeks"])
def test_bad_durations_are_refused(text):
    with pytest.raises(DataError, match="not a positive duration"):
        parse_duration(text)


def test_the_configuration_page_documents_every_variable_with_its_default():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for field in dataclasses.fields(Settings):
        name = variable(field.name)
        row = re.search(rf"^\| `{name}` \| (?:`([^`]*)`)? ?\|", readme, re.MULTILINE)  # empty default: empty cell
        assert row, f"{name} is missing from docs/configuration.md"
        documented = row.group(1) or ""
        assert documented == str(field.default), f"{name}: the docs say {documented!r}, the code {field.default!r}"


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("ECSEQ_BATCH_SIZE", "0", "from 1 to 100000"),
    ("ECSEQ_BATCH_SIZE", "-1", "from 1 to 100000"),
    ("ECSEQ_PARTITIONS", "0", "from 1 to 10000"),
    ("ECSEQ_KEEP_VERSIONS", "0", "from 1 to 10000"),
    ("ECSEQ_STATE_CACHE_BYTES", "1000", "from 1048576 to 1099511627776"),
    ("ECSEQ_MAX_STATE_BYTES", "2000000", "from 65536 to 900000"),
    ("ECSEQ_MAX_EVENT_BYTES", "-5", "from 64 to"),
    ("ECSEQ_MAX_EVENT_BYTES", "999999999", "from 64 to"),
    ("ECSEQ_WEB_PORT", "0", "from 1 to 65535"),
    ("ECSEQ_BUILDER_METRICS_PORT", "70000", "from 1 to 65535"),
    ("ECSEQ_REPLICATION_FACTOR", "-1", "from 0 to 32"),
    ("ECSEQ_GATE_TOLERANCE", "nan", "from 0 to 1"),
    ("ECSEQ_GATE_TOLERANCE", "inf", "from 0 to 1"),
    ("ECSEQ_GATE_TOLERANCE", "-0.1", "from 0 to 1"),
    ("ECSEQ_GATE_METRIC", "f1", "one of ap, auc, r_at_p90"),
    ("ECSEQ_STATE_STORE", "redis://", "one of rocksdb://, memory://"),
    ("ECSEQ_EVENTS_TOPIC", "my events", "a Kafka topic name"),
    ("ECSEQ_APP_ID", "", "a Kafka topic name"),
    ("ECSEQ_APP_ID", "x" * 250, "a Kafka topic name"),
    ("ECSEQ_STORE", " ", "must not be empty"),
    ("ECSEQ_WEB_HOST", "", "must not be empty"),
    ("ECSEQ_BATCH_WITHIN", "0ms", "not a positive duration"),
    ("ECSEQ_SESSION_TIMEOUT", "soon", "not a positive duration"),
    ("ECSEQ_BUILD_EVERY", "-1m", "not a positive duration"),
])
def test_every_value_is_checked_and_a_bad_one_names_its_variable(variable, value, problem):
    with pytest.raises(DataError, match=rf"^{variable}=.*: .*{re.escape(problem)}"):
        Settings.from_env({variable: value})


def test_commands_refuse_a_bad_setting_with_one_line_and_status_2():
    import os
    import subprocess
    import sys

    for command in (["worker"], ["builder", "--once"], ["artifacts", "list"]):
        done = subprocess.run([sys.executable, "-m", "ecseq_cli", *command], capture_output=True, text=True,
                              env={**os.environ, "ECSEQ_BATCH_SIZE": "0"}, timeout=120)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr == "ecseq: error: ECSEQ_BATCH_SIZE=0: must be a number from 1 to 100000\n", command


@pytest.mark.fuzz
@fuzz(300)
@given(st.dictionaries(st.sampled_from(sorted(variable(f.name) for f in dataclasses.fields(Settings))),
                       st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
                       | st.sampled_from(["0", "-1", "nan", "inf", "1e9", "65536", "5ms", "0s", "memory://"]),
                       max_size=4))
def test_any_environment_gives_settings_or_one_line_naming_a_variable(env):
    try:
        settings = Settings.from_env(env)
    except DataError as exc:
        assert "\n" not in str(exc) and str(exc).split("=", 1)[0] in env
        return
    assert settings.batch_size >= 1 and 1 <= settings.web_port <= 65535 and 0 <= settings.gate_tolerance <= 1
