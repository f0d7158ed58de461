"""LSTM (the paper's backbone) and Transformer encoders sharing one interface.

`embed` gives the sequence embedding h (the hidden state after the last event); `head` is the
linear encoder-only scorer on top of it. Both keep their constructor arguments in `config` so an
artifact can rebuild the exact module before loading weights.
"""

from __future__ import annotations

import torch
from torch import nn

BACKBONES = ("lstm", "transformer")


class SequenceEncoder(nn.Module):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = dict(config)
        self.head = nn.Linear(config["hidden"], 1)

    @property
    def embedding_dim(self) -> int:
        return int(self.config["hidden"])

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Encoder-only logits from embeddings: (B, H) -> (B,)."""
        return self.head(embeddings).squeeze(-1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.score_embeddings(self.embed(windows))


class LSTMEncoder(SequenceEncoder):
    def __init__(self, input_dim: int, hidden: int = 32, layers: int = 1) -> None:
        super().__init__({"backbone": "lstm", "input_dim": input_dim, "hidden": hidden, "layers": layers})
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(windows)
        return h_n[-1]


class TransformerEncoder(SequenceEncoder):
    """Pre-norm Transformer over the window; padding masked out; embedding = the last position."""

    def __init__(self, input_dim: int, hidden: int = 32, layers: int = 2, heads: int = 4, max_len: int = 50) -> None:
        super().__init__({"backbone": "transformer", "input_dim": input_dim, "hidden": hidden,
                          "layers": layers, "heads": heads, "max_len": max_len})
        self.project = nn.Linear(input_dim, hidden)
        self.position = nn.Parameter(torch.zeros(max_len, hidden))
        block = nn.TransformerEncoderLayer(hidden, heads, dim_feedforward=2 * hidden, dropout=0.1,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        length = windows.shape[1]
        x = self.project(windows) + self.position[-length:]
        padding = windows[:, :, 0] == 0  # column 0 is 1.0 on every real event
        return self.norm(self.blocks(x, src_key_padding_mask=padding)[:, -1])


def build_encoder(config: dict) -> SequenceEncoder:
    """Rebuild an encoder from its `config` (as saved in an artifact)."""
    kwargs = {k: v for k, v in config.items() if k != "backbone"}
    if config["backbone"] == "lstm":
        return LSTMEncoder(**kwargs)
    if config["backbone"] == "transformer":
        return TransformerEncoder(**kwargs)
    raise ValueError(f"unknown backbone {config['backbone']!r}; choose from {', '.join(BACKBONES)}")


def new_encoder(backbone: str, input_dim: int, hidden: int, window: int) -> SequenceEncoder:
    """A fresh (untrained) encoder; the Transformer's learned positions cover `window` events."""
    extra = {"max_len": window} if backbone == "transformer" else {}
    return build_encoder({"backbone": backbone, "input_dim": input_dim, "hidden": hidden, **extra})
