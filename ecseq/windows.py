"""Windows of each user's last L events, gathered on demand from one featurised event matrix.

Materialising (n_labelled, L, dim) up front costs gigabytes on real data; instead every event is
featurised once and a batch of windows is an index gather. Windows are left-padded with zero rows,
so the most recent event is always the last step the encoder reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SequenceWindows:
    features: torch.Tensor  # (n_events + 1, dim) float32; the last row is the all-zero pad
    user_start: np.ndarray  # (n_events,) int64: row of each event's user's first event
    length: int

    @classmethod
    def build(cls, features: np.ndarray, user_start: np.ndarray, length: int = 50) -> SequenceWindows:
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        padded = np.vstack([features, np.zeros((1, features.shape[1]), dtype=np.float32)])
        return cls(torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32)),
                   np.asarray(user_start, dtype=np.int64), length)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """(B,) event rows -> (B, L, dim): each row's user's events up to and including it."""
        rows = np.asarray(rows, dtype=np.int64)
        idx = rows[:, None] + np.arange(1 - self.length, 1, dtype=np.int64)[None, :]
        idx = np.where(idx >= self.user_start[rows][:, None], idx, len(self.features) - 1)
        return self.features[torch.from_numpy(idx)]

    def batches(self, rows: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (row slice, window tensor) in order, for embedding many rows."""
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            yield part, self.gather(part)
