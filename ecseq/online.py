"""Online scoring: arriving events, each with its user's history, scored in one batched call.

Framework-free, for the stream worker: the same numbers as the offline core (``SequenceWindows``
windows of ``FeatureSpec.transform`` rows through ``Scorer.score_windows``) for the same events,
without pandas on the hot path (``FeatureSpec.transform_arrays``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ecseq.artifacts import LoadedArtifact
from ecseq.decoding import EventSchema
from ecseq.history import UserHistory
from ecseq.scoring import Lap


class OnlineScore(NamedTuple):  # a tuple: one is made per event
    event_id: str
    user_id: str
    score: float
    encoder_score: float
    neighbours: int
    explanation: list[dict]  # ScoreBatch.explanation: the compressed nodes the score leaned on


class OnlineScorer:
    """Scores windows of user histories with one loaded artifact (one per served version)."""

    def __init__(self, artifact: LoadedArtifact) -> None:
        self.version = artifact.version
        self.spec = artifact.bundle.feature_spec
        self.schema = EventSchema.from_spec(self.spec)
        self.window = artifact.bundle.window
        self.scorer = artifact.scorer

    def windows(self, histories: Sequence[UserHistory], positions: Sequence[int]) -> np.ndarray:
        """(B, window, dim) float32: item i's events up to and including positions[i] (the last
        `window` of them), featurised, left-padded with zero rows like SequenceWindows."""
        if len(histories) != len(positions):
            raise ValueError(f"{len(histories)} histories but {len(positions)} positions")
        numeric: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        lengths: list[int] = []
        values: list[str] = []
        offsets: list[int] = []
        for history, position in zip(histories, positions):
            if not 0 <= position < len(history):
                raise ValueError(f"position {position} is outside a history of {len(history)} events")
            if history.schema is not self.schema and history.schema != self.schema:
                history = history.with_schema(self.schema)
            num, code, distinct = history.columns(max(0, position + 1 - self.window), position + 1)
            numeric.append(num)
            codes.append(code)
            lengths.append(len(num))
            offsets.append(len(values))
            values.extend(distinct)
        out = np.zeros((len(lengths), self.window, self.spec.dim), dtype=np.float32)
        if not lengths:
            return out
        # Every history's codes index its own values: shift them into one list of all values (+ None
        # last, for missing), then featurise all rows at once. Histories share most values, so each
        # distinct one is looked up in the vocabularies once (one dict pass instead of one per column).
        sizes = np.asarray(lengths)
        all_codes = np.concatenate(codes).astype(np.int64)
        all_codes = np.where(all_codes >= 0, all_codes + np.repeat(offsets, sizes)[:, None], len(values))
        row_of_value = {value: i for i, value in enumerate(dict.fromkeys(values))}
        slots = self.spec.category_slots([*row_of_value, None])
        # each value's row in `slots`, and for the missing code the None row after them
        row_of = np.append(np.fromiter(map(row_of_value.__getitem__, values), dtype=np.int64, count=len(values)),
                           len(row_of_value))
        rows = self.spec.transform_slots(np.concatenate(numeric),
                                         slots[row_of[all_codes], np.arange(all_codes.shape[1])])
        item = np.repeat(np.arange(len(sizes)), sizes)
        first = np.cumsum(sizes) - sizes  # each item's first row in `rows`
        step = np.arange(len(rows)) - np.repeat(first, sizes) + np.repeat(self.window - sizes, sizes)
        out[item, step] = rows
        return out

    def score(self, histories: Sequence[UserHistory], positions: Sequence[int],
              lap: Lap | None = None) -> list[OnlineScore]:
        """One score per (history, position): the event at that position, on its window; one batched
        encoder + graph pass for all of them.

        Positions are those `UserHistory.append` returned; a later append to the same history can
        shift them, so when one user has several events in a batch pass `history.copy()` taken
        right after each append. Scores equal the offline core's when the histories' `limit` is at
        least `window` and each user's events arrived in time order.
        """
        if not histories:
            return []
        windows = torch.from_numpy(self.windows(histories, positions))
        if lap is not None:
            lap("featurise")
        batch = self.scorer.score_windows(windows, lap)
        return [OnlineScore(history.event_id(position), history.user_id, score, encoder_score, neighbours, explanation)
                for history, position, score, encoder_score, neighbours, explanation in zip(
                    histories, positions, batch.score.tolist(), batch.encoder_score.tolist(),
                    batch.neighbours.tolist(), batch.explanations(self.scorer.graph))]
