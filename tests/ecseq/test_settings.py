import dataclasses
import re
from pathlib import Path

import pytest

from ecseq.data.events import DataError
from ecseq.settings import Settings, parse_duration


def test_defaults_and_environment_overrides():
    assert Settings.from_env({}) == Settings()
    settings = Settings.from_env({"ECSEQ_STORE": "/srv/artifacts", "ECSEQ_KEEP_VERSIONS": "9",
                                  "ECSEQ_GATE_TOLERANCE": "0.02", "OTHER": "x"})
    assert (settings.store, settings.keep_versions, settings.gate_tolerance) == ("/srv/artifacts", 9, 0.02)
    assert Settings.variable("artifacts_topic") == "ECSEQ_ARTIFACTS_TOPIC"


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


def test_the_readme_documents_every_variable_with_its_default():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for field in dataclasses.fields(Settings):
        name = Settings.variable(field.name)
        row = re.search(rf"^\| `{name}` \| (?:`([^`]*)`)? ?\|", readme, re.MULTILINE)  # empty default: empty cell
        assert row, f"{name} is missing from the README's configuration table"
        documented = row.group(1) or ""
        assert documented == str(field.default), f"{name}: README says {documented!r}, the code {field.default!r}"
