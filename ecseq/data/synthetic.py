"""Synthetic card-transaction streams with coordinated fraud campaigns.

Normal users follow personal habits and sometimes do odd things (travel, a new phone,
shopping sprees, someone else briefly using the card), so no single generic tell (burst,
new device, foreign country) marks fraud. Each fraud campaign takes over a group of users
within a few weeks and makes their next few events follow one fingerprint whose every field
value is common. Someone else using a card looks exactly like that from inside one user's
sequence; only the same combination showing up in OTHER users' sequences at the same time
gives fraud away, which is the information relation modelling adds over a per-user model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecseq.data.datasets import Dataset, make_dataset

CATEGORICAL = ("mcc", "device", "country", "channel")
MCCS = np.array([f"mcc{i:02d}" for i in range(20)], dtype=object)
DEVICES = np.array([f"dev{i}" for i in range(6)], dtype=object)
COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR"], dtype=object)
CHANNELS = np.array(["web", "app", "pos"], dtype=object)
START_TS = 1_704_067_200.0  # 2024-01-01 00:00 UTC
KEEP = -1  # an episode field that follows the user's own habits


def _popularity(n: int, decay: float) -> np.ndarray:
    """Zipf-like category popularity: a few values are common, the rest rare."""
    weights = 1.0 / np.arange(1, n + 1) ** decay
    return weights / weights.sum()


MCC_POP = _popularity(len(MCCS), 0.9)
DEVICE_POP = _popularity(len(DEVICES), 0.7)
COUNTRY_POP = _popularity(len(COUNTRIES), 1.3)
CHANNEL_POP = np.array([0.45, 0.35, 0.20])
# Log price level per merchant category, the same for every seed like a real price list.
MCC_PRICE = np.random.default_rng(12345).normal(0.0, 0.4, len(MCCS))


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category index per row of an (n, k) non-negative weight matrix."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _sample(pop: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws from a popularity vector."""
    return rng.choice(len(pop), size=n, p=pop)


def _sample_other(pop: np.ndarray, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Popularity-weighted draws that avoid each row's excluded value."""
    weights = np.tile(pop, (len(exclude), 1))
    weights[np.arange(len(exclude)), exclude] = 0.0
    return _sample_rows(weights, rng)


def _maybe(values: np.ndarray, p_keep: float, rng: np.random.Generator) -> np.ndarray:
    """Replace values by KEEP with probability p_keep."""
    return np.where(rng.random(len(values)) < p_keep, KEEP, values)


def _usually(habit: np.ndarray, p: float, pop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The habitual value with probability p, else a popularity-weighted random one."""
    return np.where(rng.random(len(habit)) < p, habit, _sample(pop, len(habit), rng))


@dataclass(frozen=True)
class Habits:
    """Per-user behaviour parameters, one array entry per user."""

    rate: np.ndarray  # events per day
    home: np.ndarray
    device: np.ndarray
    new_device: np.ndarray  # device after a phone change
    phone_change: np.ndarray  # hour of the change, inf if none
    channel: np.ndarray
    mcc: np.ndarray  # (n_users, 4) favourite merchant categories
    mcc_weight: np.ndarray  # (n_users, 4) Dirichlet weights, 0 past the 2-4 favourites
    log_amount: np.ndarray
    amount_sigma: np.ndarray
    peak_hour: np.ndarray
    hour_spread: np.ndarray


def draw_habits(n_users: int, days: int, rng: np.random.Generator) -> Habits:
    """Personal habits: skewed popular choices so fraud fingerprints can reuse common values."""
    gumbel = np.log(MCC_POP) + rng.gumbel(size=(n_users, len(MCCS)))
    favourites = np.argsort(-gumbel, axis=1)[:, :4]  # popularity-weighted, no repeats
    n_fav = rng.integers(2, 5, n_users)
    weight = rng.gamma(1.0, size=(n_users, 4)) * (np.arange(4) < n_fav[:, None])
    device = _sample(DEVICE_POP, n_users, rng)
    changes = rng.random(n_users) < 0.2
    return Habits(
        rate=np.clip(rng.gamma(2.0, 0.1, n_users), 0.05, 1.5),
        home=_sample(COUNTRY_POP, n_users, rng),
        device=device,
        new_device=_sample_other(DEVICE_POP, device, rng),
        phone_change=np.where(changes, rng.uniform(0, days * 24, n_users), np.inf),
        channel=_sample(CHANNEL_POP, n_users, rng),
        mcc=favourites,
        mcc_weight=weight / weight.sum(axis=1, keepdims=True),
        log_amount=rng.normal(3.4, 0.7, n_users),
        amount_sigma=rng.uniform(0.1, 0.8, n_users),
        peak_hour=np.clip(rng.normal(15.0, 3.0, n_users), 7.0, 22.0),
        hour_spread=rng.uniform(1.5, 4.0, n_users),
    )


def habit_events(
    habits: Habits, users: np.ndarray, t: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Field values of events at hours `t` that follow each user's own habits."""
    n = len(users)
    mcc = habits.mcc[users, _sample_rows(habits.mcc_weight[users], rng)]
    mcc = np.where(rng.random(n) < 0.1, _sample(MCC_POP, n, rng), mcc)
    changed = t >= habits.phone_change[users]
    usual = np.where(changed, habits.new_device[users], habits.device[users])
    log_amount = habits.log_amount[users] + MCC_PRICE[mcc]
    return pd.DataFrame(
        {
            "user": users,
            "t": t,
            "mcc": mcc,
            "device": _usually(usual, 0.92, DEVICE_POP, rng),
            "country": _usually(habits.home[users], 0.97, COUNTRY_POP, rng),
            "channel": _usually(habits.channel[users], 0.85, CHANNEL_POP, rng),
            "amount": np.exp(log_amount + habits.amount_sigma[users] * rng.normal(size=n)),
            "hour_shift": np.zeros(n),
            "label": np.zeros(n),
        }
    )


def background_events(habits: Habits, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Everyday activity: Poisson counts, uniform days, each user's diurnal pattern."""
    counts = rng.poisson(habits.rate * days)
    users = np.repeat(np.arange(len(counts)), counts)
    hour = (habits.peak_hour[users] + habits.hour_spread[users] * rng.normal(size=len(users))) % 24
    t = rng.integers(0, days, len(users)) * 24.0 + hour
    return habit_events(habits, users, t, rng)


def _episodes(
    user: np.ndarray, start: np.ndarray, count: np.ndarray, gap: np.ndarray, **fields: np.ndarray
) -> pd.DataFrame:
    """An episode table: `count` events per row, `gap` hours apart on average, overriding
    the habit fields given in `fields`."""
    n = len(user)
    table = {
        "user": user, "start": start, "count": count, "gap": gap,
        "mcc_a": np.full(n, KEEP), "mcc_b": np.full(n, KEEP), "device": np.full(n, KEEP),
        "country": np.full(n, KEEP), "channel": np.full(n, KEEP),
        "amount_level": np.full(n, np.nan), "jitter": np.zeros(n),
        "hour_shift": np.zeros(n), "label": np.zeros(n),
    }
    table.update(fields)
    return pd.DataFrame(table)


def travel_episodes(habits: Habits, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Trips abroad: a few days of events in another country and time zone."""
    user = np.repeat(np.arange(len(habits.rate)), rng.poisson(0.4, len(habits.rate)))
    n = len(user)
    trip_days = rng.uniform(2.0, 10.0, n)
    count = rng.integers(3, 11, n)
    return _episodes(
        user,
        start=rng.uniform(0.0, days - trip_days) * 24.0,
        count=count,
        gap=trip_days * 24.0 / count,
        mcc_a=_sample(MCC_POP, n, rng),
        mcc_b=_sample(MCC_POP, n, rng),
        device=_maybe(_sample(DEVICE_POP, n, rng), 0.7, rng),
        country=_sample_other(COUNTRY_POP, habits.home[user], rng),
        channel=_maybe(_sample(CHANNEL_POP, n, rng), 0.6, rng),
        hour_shift=rng.choice([-9, -6, -5, -3, -1, 1, 2, 3, 7, 8], n).astype(float),
    )


def spree_episodes(habits: Habits, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Shopping sprees: a quick burst of similar purchases at merchants of the occasion."""
    user = np.repeat(np.arange(len(habits.rate)), rng.poisson(0.6, len(habits.rate)))
    n = len(user)
    return _episodes(
        user,
        start=rng.integers(0, days, n) * 24.0 + rng.uniform(8.0, 23.0, n),
        count=rng.integers(3, 9, n),
        gap=rng.uniform(0.05, 1.0, n),
        mcc_a=_sample(MCC_POP, n, rng),
        mcc_b=_sample(MCC_POP, n, rng),
        device=_maybe(_sample(DEVICE_POP, n, rng), 0.7, rng),
        country=_maybe(_sample(COUNTRY_POP, n, rng), 0.8, rng),
        channel=_maybe(_sample(CHANNEL_POP, n, rng), 0.5, rng),
        amount_level=np.exp(habits.log_amount[user] + rng.uniform(-0.5, 1.0, n)),
        jitter=np.full(n, 0.15),
    )


def fingerprints(n: int, amounts: np.ndarray, rng: np.random.Generator, common: bool = True) -> pd.DataFrame:
    """Behaviour fingerprints. Common ones (a relative borrowing the card) use popular merchant
    categories, devices and countries; a campaign's may use any value, so victims of one ring
    look alike to a sequence encoder even when no single value is a fraud tell."""
    def pick(pop: np.ndarray, top: int) -> np.ndarray:
        weights = pop[:top] / pop[:top].sum() if common else np.full(len(pop), 1.0 / len(pop))
        return _sample(weights, n, rng)

    return pd.DataFrame(
        {
            "mcc_a": pick(MCC_POP, 10),
            "mcc_b": pick(MCC_POP, 10),
            "device": pick(DEVICE_POP, 4),
            "country": pick(COUNTRY_POP, 4),
            "channel": _sample(CHANNEL_POP, n, rng),
            "amount_level": np.quantile(amounts, rng.uniform(0.25, 0.75, n)),
            "hour": rng.integers(8, 23, n).astype(float),
            "gap": rng.uniform(0.05, 0.4, n),
        }
    )


def _fingerprint_episodes(
    user: np.ndarray, day: np.ndarray, prints: pd.DataFrame, label: float, rng: np.random.Generator
) -> pd.DataFrame:
    """Bursts of 3-8 events that follow a fingerprint (amount +-10%, hour +-1)."""
    n = len(user)
    fields = ("mcc_a", "mcc_b", "device", "country", "channel", "amount_level")
    return _episodes(
        user,
        start=day * 24.0 + prints["hour"].to_numpy() + rng.uniform(-1.0, 1.0, n),
        count=rng.integers(3, 9, n),
        gap=prints["gap"].to_numpy(),
        jitter=np.full(n, 0.10),
        label=np.full(n, label),
        **{field: prints[field].to_numpy() for field in fields},
    )


def shared_card_episodes(
    n_users: int, days: int, amounts: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Someone else (family, a friend abroad) briefly uses the card: a burst drawn exactly
    like a campaign's, but never repeated by other users, so only relations tell them apart."""
    user = np.repeat(np.arange(n_users), rng.poisson(0.5, n_users))
    day = rng.integers(0, days, len(user)).astype(float)
    return _fingerprint_episodes(user, day, fingerprints(len(user), amounts, rng), 0.0, rng)


def _campaign_sizes(n_campaigns: int, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """12-36 victims per campaign at 3000 users, scaled with the population; at most a
    third of all users are ever victims."""
    sizes = np.round(rng.integers(12, 37, n_campaigns) * n_users / 3000).astype(int)
    sizes = np.maximum(2, sizes)
    if sizes.sum() > n_users // 3:
        sizes = np.maximum(1, sizes * (n_users // 3) // sizes.sum())
    return sizes


def campaign_episodes(
    n_campaigns: int, n_users: int, days: int, amounts: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """Fraud campaigns: each keeps taking over new victims for 30-120 days (a ring reuses what
    works) and makes their next 3-8 events follow the campaign's one fingerprint. Campaigns start
    throughout the period, so some are only labelled in recent data."""
    campaign = np.repeat(np.arange(n_campaigns), _campaign_sizes(n_campaigns, n_users, rng))
    first_day = rng.uniform(0.0, days, n_campaigns)
    last_day = np.minimum(first_day + rng.uniform(30.0, 120.0, n_campaigns), days)
    day = np.floor(rng.uniform(first_day[campaign], last_day[campaign]))
    prints = fingerprints(n_campaigns, amounts, rng, common=False).iloc[campaign].reset_index(drop=True)
    victims = rng.permutation(n_users)[: len(campaign)]
    return _fingerprint_episodes(victims, day, prints, 1.0, rng)


def expand_episodes(
    episodes: pd.DataFrame, habits: Habits, rng: np.random.Generator
) -> pd.DataFrame:
    """One event per episode step: exponential gaps, habit fields unless overridden."""
    count = episodes["count"].to_numpy()
    ep = np.repeat(np.arange(len(episodes)), count)
    first = np.repeat(np.cumsum(count) - count, count)  # row of each episode's first event
    gaps = rng.exponential(episodes["gap"].to_numpy()[ep])
    gaps[np.arange(len(ep)) == first] = 0.0
    elapsed = np.cumsum(gaps)
    t = episodes["start"].to_numpy()[ep] + elapsed - elapsed[first]
    events = habit_events(habits, episodes["user"].to_numpy()[ep], t, rng)
    row = episodes.iloc[ep].reset_index(drop=True)
    mcc = np.where(rng.random(len(ep)) < 0.5, row["mcc_a"], row["mcc_b"])
    events["mcc"] = np.where(mcc == KEEP, events["mcc"], mcc)
    for field in ("device", "country", "channel"):
        events[field] = np.where(row[field] == KEEP, events[field], row[field])
    jittered = row["amount_level"] * rng.uniform(1.0 - row["jitter"], 1.0 + row["jitter"])
    events["amount"] = np.where(row["amount_level"].isna(), events["amount"], jittered)
    events["hour_shift"] = row["hour_shift"].to_numpy()
    events["label"] = row["label"].to_numpy()
    return events


def drop_during(events: pd.DataFrame, episodes: pd.DataFrame, days: int) -> pd.DataFrame:
    """Remove a user's everyday events while they are away on an episode (a trip)."""
    span = days * 24.0 + 1000.0  # beyond any event time, so keys never overlap across users
    keys = events["user"].to_numpy() * span + events["t"].to_numpy()
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    base = episodes["user"].to_numpy() * span + episodes["start"].to_numpy()
    end = base + episodes["count"].to_numpy() * episodes["gap"].to_numpy()
    marks = np.zeros(len(keys) + 1)
    np.add.at(marks, np.searchsorted(keys, base), 1.0)
    np.add.at(marks, np.searchsorted(keys, end), -1.0)
    away = np.empty(len(keys), dtype=bool)
    away[order] = np.cumsum(marks)[:-1] > 0
    return events[~away]


def to_event_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Order each user's events in time and derive the contract's columns."""
    events = events.assign(t=np.round(events["t"] * 3600.0) / 3600.0)
    events = events.sort_values(["user", "t"], kind="stable", ignore_index=True)
    hours_since_prev = events.groupby("user", sort=False)["t"].diff()
    user_id = np.char.add("u", np.char.zfill(events["user"].to_numpy().astype(str), 5))
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(user_id, dtype=object),
            "ts": START_TS + np.round(events["t"].to_numpy() * 3600.0),
            "label": events["label"].to_numpy(dtype=np.float64),
            "amount": np.round(events["amount"].to_numpy(), 2),
            "hour": np.floor((events["t"] + events["hour_shift"]) % 24.0).to_numpy(),
            "hours_since_prev": hours_since_prev.to_numpy(),
            "mcc": pd.Series(MCCS[events["mcc"].to_numpy()], dtype=object),
            "device": pd.Series(DEVICES[events["device"].to_numpy()], dtype=object),
            "country": pd.Series(COUNTRIES[events["country"].to_numpy()], dtype=object),
            "channel": pd.Series(CHANNELS[events["channel"].to_numpy()], dtype=object),
        }
    )
    frame = frame.sort_values("ts", kind="stable", ignore_index=True)
    event_id = np.char.add("ev", np.arange(len(frame)).astype(str))
    frame.insert(3, "event_id", pd.Series(event_id, dtype=object))
    return frame


def generate_synthetic(
    n_users: int = 3000, days: int = 180, n_campaigns: int = 40, seed: int = 0
) -> pd.DataFrame:
    """Deterministic event frame for a seed; every event is labelled (1.0 = fraud)."""
    rng = np.random.default_rng(seed)
    habits = draw_habits(n_users, days, rng)
    background = background_events(habits, days, rng)
    amounts = background["amount"].to_numpy()
    trips = travel_episodes(habits, days, rng)
    episodes = pd.concat(
        [
            trips,
            spree_episodes(habits, days, rng),
            shared_card_episodes(n_users, days, amounts, rng),
            campaign_episodes(n_campaigns, n_users, days, amounts, rng),
        ],
        ignore_index=True,
    )
    everyday = drop_during(background, trips, days)
    events = pd.concat([everyday, expand_episodes(episodes, habits, rng)], ignore_index=True)
    return to_event_frame(events)


def load_synthetic(seed: int = 0) -> Dataset:
    """The default data set: `generate_synthetic` with its default sizes."""
    return make_dataset("synthetic", generate_synthetic(seed=seed), CATEGORICAL)
