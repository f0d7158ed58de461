"""The retrained head: logistic regression on frozen embeddings.

It is the cheap thing a user would try before a graph, so every evaluation reports it: a relation
model is only worth its cost if it beats this too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class LogisticHead:
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iterations: int = 200) -> LogisticHead:
        """Full-batch L-BFGS on standardised features with a small L2 penalty."""
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xs = torch.from_numpy(((x - mean) / scale).astype(np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = F.binary_cross_entropy_with_logits(xs @ w + b, yt) + l2 * (w * w).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        return cls(mean, scale, w.detach().numpy().copy(), float(b.detach()))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weight + self.bias
