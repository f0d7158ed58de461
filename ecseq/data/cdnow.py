"""CDNOW purchases as event sequences: predict at a cut-off which customers have churned
(make no purchase in the following horizon), from their purchase history up to the cut-off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecseq.data.datasets import Dataset, make_dataset, package_file

CATEGORICAL: tuple[str, ...] = ()


def cdnow_path() -> Path:
    """Path of the CDNOW master file the `lifetimes` package ships (read, never imported)."""
    return package_file("lifetimes", "datasets/CDNOW_master.txt")


def read_purchases() -> pd.DataFrame:
    """All purchases, one row each, ordered by customer then date (file order within a day)."""
    raw = pd.read_csv(cdnow_path(), sep=r"\s+", dtype={"customer_id": str, "date": str})
    purchases = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "date": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "cds": raw["number_of_cds"].astype(np.float64),
            "amount": raw["dollar_value"].astype(np.float64),
        }
    )
    return purchases.sort_values(["customer_id", "date"], kind="stable", ignore_index=True)


def _churn_labels(
    purchases: pd.DataFrame, cutoff: pd.Timestamp, horizon_end: pd.Timestamp
) -> pd.Series:
    """1.0 for customers with no purchase in (cutoff, horizon_end], indexed by customer."""
    in_horizon = (purchases["date"] > cutoff) & (purchases["date"] <= horizon_end)
    returned = set(purchases.loc[in_horizon, "customer_id"])
    customers = purchases["customer_id"].drop_duplicates()
    return pd.Series((~customers.isin(returned)).astype(np.float64).to_numpy(), index=customers)


def load_cdnow(cutoff: str = "1997-09-30", horizon_days: int = 273) -> Dataset:
    """Purchases on/before `cutoff`; each customer's last one carries the churn label.

    `ts` is the purchase day plus one second per earlier purchase that day, so each
    customer's events are strictly ordered and the labelled one is last.
    """
    cut = pd.Timestamp(cutoff)
    purchases = read_purchases()
    labels = _churn_labels(purchases, cut, cut + pd.Timedelta(days=horizon_days))
    events = purchases[purchases["date"] <= cut].reset_index(drop=True)
    by_customer = events.groupby("customer_id", sort=False)
    index = by_customer.cumcount()
    same_day = events.groupby(["customer_id", "date"], sort=False).cumcount()
    days = (events["date"] - pd.Timestamp("1970-01-01")) // pd.Timedelta(days=1)
    is_last = index == by_customer["date"].transform("size") - 1
    gap_days = (events["date"] - by_customer["date"].shift(1)) / pd.Timedelta(days=1)
    frame = pd.DataFrame(
        {
            "user_id": events["customer_id"],
            "ts": (days * 86400 + same_day).astype(np.float64),
            "label": events["customer_id"].map(labels).where(is_last),
            "event_id": "cd" + events["customer_id"] + "-" + index.astype(str),
            "cds": events["cds"],
            "amount": events["amount"],
            "days_since_prev": gap_days,
            "purchase_index": index.astype(np.float64),
            "day_of_week": events["date"].dt.day_of_week.astype(np.float64),
        }
    )
    return make_dataset("cdnow", frame, CATEGORICAL)
