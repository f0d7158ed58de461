"""Settings read from ``ECSEQ_*`` environment variables: what every process's settings share.

Each process has one settings object, a frozen dataclass built from the parts it needs
(``StoreSettings`` here, ``kafka_io.settings.KafkaSettings``, ``worker.settings.WorkerSettings``,
``compression_builder.settings.BuilderSettings``). A field's environment variable is ``ECSEQ_``
+ its name in upper case (``store`` -> ``ECSEQ_STORE``); command-line flags default to these
values, so a container configures everything through its environment. docs/configuration.md
lists every name. Every value is checked when the object is made (type, then each part's
``RULES``): a bad one is one line naming the variable, before any process starts work on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from ecseq.errors import DataError

PREFIX = "ECSEQ_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

# a value -> what is wrong with it, or None; Any: each rule takes its own field's type (float, str, ...)
Rule = Callable[[Any], str | None]


def parse_duration(text: str) -> float:
    """'15m' -> 900.0; units ms, s, m, h, d; a bare number is seconds."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise DataError(f"not a positive duration: {text!r} (examples: 30s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def variable(field_name: str) -> str:
    """The environment variable of a settings field."""
    return PREFIX + field_name.upper()


@dataclass(frozen=True)
class EnvSettings:
    """Fields with defaults, overridden by ``ECSEQ_*`` variables, checked by each class's RULES."""

    RULES: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        for owner in reversed(type(self).__mro__):
            for name, rule in vars(owner).get("RULES", {}).items():
                problem = rule(getattr(self, name))
                if problem:
                    raise DataError(f"{variable(name)}={getattr(self, name)!r}: {problem}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        env = os.environ if env is None else env
        values = {}
        for item in dataclasses.fields(cls):
            name = variable(item.name)
            if name not in env:
                continue
            kind: type[Any] = type(item.default)  # fields() gives Field[Any]: the default's own type
            try:
                values[item.name] = kind(env[name])
            except ValueError:
                raise DataError(f"{name}={env[name]!r} is not a valid {kind.__name__}") from None
        return cls(**values)


def between(low: float, high: float) -> Rule:
    def check(value: float) -> str | None:
        if not math.isfinite(value) or not low <= value <= high:
            return f"must be a number from {_plain(low)} to {_plain(high)}"
        return None
    return check


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def duration(value: str) -> str | None:
    try:
        parse_duration(value)
    except DataError as exc:
        return str(exc)
    return None


def text(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def one_of(choices: tuple[str, ...]) -> Rule:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


PORT = between(1, 65535)


@dataclass(frozen=True)
class StoreSettings(EnvSettings):
    """Where artifacts live: the builder writes them, the worker and ``ecseq artifacts`` read them."""

    store: str = "./artifacts"  # artifact store directory
    keep_versions: int = 5  # artifact versions kept in the store (plus the current one)

    RULES: ClassVar[dict[str, Rule]] = {"store": text, "keep_versions": between(1, 10_000)}
