"""demo.png: the run at a glance, for a README. Throughput and latency over the replay with the swap
marked (and the whole replay's p99), and how the streamed and the encoder-only scores separate the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from demo.progress import Seen

SCORE_BINS = 40


def per_second(seen: list[Seen], started: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seconds since the replay began, scores read in each, and their p50 / p99 latency (ms; NaN if none)."""
    read = np.array([s.read for s in seen]) - started
    latency = np.array([s.latency for s in seen]) * 1e3
    second = np.floor(read).astype(np.int64)
    edges = np.arange(second.max() + 1 if len(second) else 0)
    counts = np.bincount(second, minlength=len(edges)) if len(second) else np.zeros(0, np.int64)
    p50, p99 = np.full(len(edges), np.nan), np.full(len(edges), np.nan)
    for i in np.unique(second):
        p50[i], p99[i] = np.percentile(latency[second == i], [50, 99])
    return edges, counts, p50, p99


def plot_demo(seen: list[Seen], labels: dict[str, float], started: float, rate: float, swap_at: float | None,
              title: str, path: Path) -> None:
    fig = Figure(figsize=(12, 7.5))  # no pyplot: no global state; savefig picks Agg for PNG
    (through, latency), (streamed, encoder) = fig.subplots(2, 2)
    seconds, counts, p50, p99 = per_second(seen, started)
    through.plot(seconds, counts, color="tab:blue", label="scores read / s")
    through.axhline(rate, color="grey", linestyle=":", label="replay rate")
    through.set(xlabel="seconds since the replay began", ylabel="events / s", title="Throughput")
    latency.plot(seconds, p50, color="tab:green", label="p50")
    latency.plot(seconds, p99, color="tab:red", label="p99")
    if seen:  # the figure the summary gives: over every score of the replay, the rebuild included
        whole = float(np.percentile([s.latency for s in seen], 99) * 1e3)
        latency.axhline(whole, color="tab:red", linestyle=":", label=f"p99 over the whole replay ({whole:.0f} ms)")
    latency.set(xlabel="seconds since the replay began", ylabel="ms", title="Latency, event sent -> scored")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))
    for ax, corner in ((through, "lower left"), (latency, "upper left")):
        if swap_at is not None:
            ax.axvline(swap_at - started, color="black", linestyle="--", label="artifact swap")
        ax.grid(alpha=0.3)
        ax.legend(loc=corner)
    labelled = [s for s in seen if s.event_id in labels]
    y = np.array([labels[s.event_id] for s in labelled], dtype=bool)
    _histogram(streamed, np.array([s.score for s in labelled]), y, "Streamed score (encoder + graph)")
    _histogram(encoder, np.array([s.encoder_score for s in labelled]), y, "Encoder-only score")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


def _histogram(ax: Axes, score: np.ndarray, y: np.ndarray, title: str) -> None:
    """Each label's share of events per score bin, on a log score axis: rare-event scores crowd near 0."""
    positive = score[score > 0]
    if len(positive) == 0:
        return
    bins = np.geomspace(max(np.quantile(positive, 0.001), 1e-6), positive.max(), SCORE_BINS + 1)
    for mask, name, colour in ((~y, "label 0", "tab:blue"), (y, "label 1", "tab:red")):
        if mask.any():
            ax.hist(np.clip(score[mask], bins[0], bins[-1]), bins=bins, weights=np.full(mask.sum(), 1 / mask.sum()),
                    alpha=0.5, color=colour, label=f"{name} ({mask.sum():,} events)")
    ax.set_xscale("log")
    ax.set(xlabel="score (log scale)", ylabel="share of the label's events", title=title)
    ax.legend(loc="upper left")
