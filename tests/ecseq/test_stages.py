"""StageClock: one stage timer for the worker, the builder and artifact loading."""

from __future__ import annotations

import time

import pytest

from ecseq.stages import StageClock


def test_laps_time_consecutive_stages_and_tell_each_as_it_ends():
    told: list[tuple[str, float]] = []
    clock = StageClock(lambda stage, seconds: told.append((stage, seconds)))
    time.sleep(0.02)
    clock.lap("first")
    clock.lap("second")  # right after: the time since the previous lap, not since the start
    assert [stage for stage, _ in told] == ["first", "second"]
    assert told[0][1] >= 0.02 > told[1][1] >= 0.0
    assert clock.seconds == dict(told)


def test_a_repeated_stage_sums_and_a_block_restarts_the_laps():
    clock = StageClock()
    clock.add("gnn", 1.5)
    with clock("gnn"):
        time.sleep(0.01)
    assert clock.seconds["gnn"] >= 1.51
    clock.lap("after")  # measured from the block's end
    assert clock.seconds["after"] < 0.01


def test_a_failing_block_is_not_counted():
    clock = StageClock()
    with pytest.raises(ValueError), clock("read"):
        raise ValueError("broken input")
    assert clock.seconds == {}
