"""The built-in data sets: the shared event format, no leakage, and the synthetic design."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecseq.data.builtin import DATASETS, load_dataset
from ecseq.data.cdnow import load_cdnow
from ecseq.data.datasets import BASE_COLUMNS, Dataset
from ecseq.data.synthetic import generate_synthetic


@pytest.fixture(scope="module")
def synthetic() -> Dataset:
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def flights() -> Dataset:
    return load_dataset("nycflights13")


@pytest.fixture(scope="module")
def cdnow() -> Dataset:
    return load_dataset("cdnow")


@pytest.fixture(scope="module")
def fraud(synthetic: Dataset) -> pd.DataFrame:
    frame = synthetic.frame
    return frame[frame["label"] == 1.0]


@pytest.mark.parametrize("fixture", ["synthetic", "flights", "cdnow"])
def test_event_format(fixture: str, request: pytest.FixtureRequest) -> None:
    dataset: Dataset = request.getfixturevalue(fixture)
    frame = dataset.frame
    assert tuple(frame.columns[:4]) == BASE_COLUMNS
    assert set(dataset.categorical) <= set(dataset.features)
    for column in ("user_id", "event_id", *dataset.categorical):
        assert frame[column].dtype == object
        assert frame[column].map(type).eq(str).all()
    for column in ("ts", "label", *dataset.numeric):
        assert frame[column].dtype == np.float64
    assert frame["event_id"].is_unique
    assert frame["label"].dropna().isin([0.0, 1.0]).all()
    assert frame["label"].notna().any()
    assert frame["ts"].is_monotonic_increasing


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="synthetic, nycflights13, cdnow"):
        load_dataset("mnist")
    assert DATASETS == ("synthetic", "nycflights13", "cdnow")


def test_flights_counts_and_cancellation_rate(flights: Dataset) -> None:
    frame = flights.frame
    assert len(frame) == 334_264  # 336,776 flights less 2,512 without a tail number
    assert frame["label"].notna().all()
    assert 0.015 < frame["label"].mean() < 0.03


def test_flights_features_known_before_departure(flights: Dataset) -> None:
    outcomes = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "cancelled"}
    assert not outcomes & set(flights.features)
    frame = flights.frame.sort_values(["user_id", "ts"], kind="stable")
    previous_label = frame.groupby("user_id")["label"].shift(1)
    known = frame["hours_since_prev"] > 0
    assert frame["prev_cancelled"][known].equals(previous_label[known])
    # Delays are shifted like the label: after a cancelled flight there is no delay to report.
    assert frame["prev_dep_delay"][known & (previous_label == 1.0)].isna().all()


def test_cdnow_one_label_per_customer_on_last_event(cdnow: Dataset) -> None:
    frame = cdnow.frame
    labelled = frame[frame["label"].notna()]
    assert labelled["user_id"].is_unique
    assert labelled["user_id"].nunique() == frame["user_id"].nunique() == 23_570
    last = frame.groupby("user_id")["ts"].transform("max")
    assert (labelled["ts"] == last[labelled.index]).all()
    assert 0.5 < labelled["label"].mean() < 0.9


def test_cdnow_excludes_events_after_cutoff() -> None:
    frame = load_cdnow(cutoff="1997-06-30", horizon_days=365).frame
    end_of_cutoff = pd.Timestamp("1997-07-01").timestamp()
    assert frame["ts"].max() < end_of_cutoff
    assert frame["label"].notna().sum() == frame["user_id"].nunique()


def test_synthetic_deterministic_per_seed() -> None:
    small = {"n_users": 300, "days": 60, "n_campaigns": 4}
    first = generate_synthetic(seed=1, **small)
    pd.testing.assert_frame_equal(first, generate_synthetic(seed=1, **small))
    assert not first.equals(generate_synthetic(seed=2, **small))


def test_synthetic_size_and_positive_rate(synthetic: Dataset) -> None:
    frame = synthetic.frame
    assert 50_000 <= len(frame) <= 150_000
    assert frame["user_id"].nunique() == 3000
    assert frame["label"].notna().all()
    assert 0.01 <= frame["label"].mean() <= 0.05


def test_synthetic_campaigns_start_throughout_period(fraud: pd.DataFrame, synthetic: Dataset) -> None:
    ts = synthetic.frame["ts"]
    position = (fraud["ts"] - ts.min()) / (ts.max() - ts.min())
    assert position.min() < 0.25 and position.max() > 0.75


def test_synthetic_victims_share_fingerprints(fraud: pd.DataFrame) -> None:
    key = ["mcc", "device", "country", "channel"]
    victims_per_key = fraud.groupby(key)["user_id"].transform("nunique")
    assert (victims_per_key >= 4).mean() > 0.9
    # Each victim's fraud events repeat the campaign's amount level within +-10%.
    amounts = fraud.groupby("user_id")["amount"]
    assert (amounts.max() / amounts.min()).max() < 1.1 / 0.9 + 0.01


def test_synthetic_no_categorical_value_is_a_fraud_tell(
    synthetic: Dataset, fraud: pd.DataFrame
) -> None:
    """Campaigns may use rare values, but every value they use is mostly used honestly."""
    frame = synthetic.frame
    for column in synthetic.categorical:
        normal_values = set(frame.loc[frame["label"] == 0.0, column])
        assert set(fraud[column].unique()) <= normal_values, column
        assert frame.groupby(column)["label"].mean().max() < 0.5, column


def _usual(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each row's user's most frequent value of `column`."""
    counts = frame.groupby(["user_id", column]).size().rename("n").reset_index()
    modal = counts.sort_values("n", kind="stable").drop_duplicates("user_id", keep="last")
    return frame["user_id"].map(modal.set_index("user_id")[column])


def test_synthetic_no_single_generic_tell(synthetic: Dataset) -> None:
    frame = synthetic.frame
    tells = {
        "burst": frame["hours_since_prev"] < 1.0,
        "other device": frame["device"] != _usual(frame, "device"),
        "other country": frame["country"] != _usual(frame, "country"),
    }
    for name, flagged in tells.items():
        assert frame["label"][flagged].mean() < 0.5, name
