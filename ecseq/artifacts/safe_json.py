"""JSON from an artifact (manifest, feature spec), parsed within limits.

An artifact's JSON is read by a long-running worker, so nothing in it may raise past the
refusal or cost more than its bytes: nesting is limited (deeper input raised RecursionError,
or went on to exhaust whatever walks it later), numbers must be finite floats or integers of
at most MAX_DIGITS digits (Python refuses longer ones with a ValueError of its own), and
NaN / Infinity are not JSON.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 32
MAX_DIGITS = 64


class JSONLimitError(ValueError):
    """The text is not JSON within the limits; the message says which."""


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"number {text[:20]} is beyond float range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise JSONLimitError(f"integer of {len(text)} digits")
    return int(text)


def _constant(name: str) -> float:
    raise JSONLimitError(f"{name} is not JSON")


def _depth(value: object) -> int:
    """Nesting depth, without recursion (the value was parsed, so it is finite)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            todo.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(raw: bytes) -> object:
    """The JSON value in UTF-8 `raw`; JSONLimitError (a ValueError) for anything else."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_float=_float, parse_int=_int, parse_constant=_constant)
    except JSONLimitError:
        raise
    except UnicodeDecodeError:
        raise JSONLimitError("not UTF-8") from None
    except RecursionError:
        raise JSONLimitError(f"nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:
        raise JSONLimitError(str(exc)) from None
    if _depth(value) > MAX_DEPTH:
        raise JSONLimitError(f"nested deeper than {MAX_DEPTH}")
    return value
