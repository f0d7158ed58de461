"""Training the relation GNN the way the paper does: batches of real training embeddings are
attached to the fixed graph nodes and the loss is taken on the real nodes only.

Embeddings come from the frozen encoder, so they are computed once by the caller. The optional
alignment term (the paper's auxiliary loss, absent from its public code) also scores every
compressed node as if it were a new sequence and pulls that score towards the node's positive
rate, so real and compressed nodes live on one scale.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ecseq.gnn import RelationGNN
from ecseq.graph import Attacher, Neighbours
from ecseq.ranking import roc_auc


@dataclass(frozen=True)
class Labelled:
    """Frozen-encoder outputs for a set of sequences: embeddings, encoder logits, labels."""

    embeddings: torch.Tensor
    base_logits: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, embeddings: np.ndarray, base_logits: np.ndarray, labels: np.ndarray) -> Labelled:
        return cls(torch.as_tensor(embeddings, dtype=torch.float32),
                   torch.as_tensor(base_logits, dtype=torch.float32),
                   torch.as_tensor(np.asarray(labels, dtype=np.float32)))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class GNNTrainConfig:
    epochs: int = 300
    batch_size: int = 1000
    lr: float = 0.005
    patience: int = 10
    align_weight: float = 0.0
    seed: int = 0
    progress: bool = True


@dataclass
class GNNTrainResult:
    best_epoch: int
    best_val_auc: float
    epochs_run: int
    seconds: float


def train_gnn(model: RelationGNN, node_x: torch.Tensor, train: Labelled, train_attacher: Attacher, val: Labelled,
              val_attacher: Attacher, config: GNNTrainConfig = GNNTrainConfig(),
              align: Labelled | None = None) -> GNNTrainResult:
    """Train in place; keeps the weights of the best validation-AUC epoch."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    # the encoder is frozen and the graph fixed, so every sequence's neighbours are found once
    train_nbrs = train_attacher(train.embeddings)
    val_nbrs = val_attacher(val.embeddings) if len(val) else None
    align_nbrs = train_attacher(align.embeddings) if align is not None and config.align_weight > 0 else None
    # Start from the untrained model's validation AUC (with residual: exactly the encoder's), so
    # a GNN that never beats it on validation is not kept.
    best_auc, best_epoch, best_state = _val_auc(model, node_x, val, val_nbrs), -1, copy.deepcopy(model.state_dict())
    epoch = -1
    bar = tqdm(range(config.epochs), desc="gnn", unit="epoch", disable=not config.progress, leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), config.batch_size):
            idx = torch.from_numpy(order[start:start + config.batch_size])
            messages = model.node_messages(node_x)
            logit, _, _ = model(train.embeddings[idx], train_nbrs.take(idx), messages, train.base_logits[idx])
            loss = F.binary_cross_entropy_with_logits(logit, train.labels[idx])
            if align is not None and align_nbrs is not None:  # align_nbrs is only set with align
                a_logit, _, _ = model(align.embeddings, align_nbrs, messages, align.base_logits)
                loss = loss + config.align_weight * F.binary_cross_entropy_with_logits(a_logit, align.labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if val_nbrs is None:
            continue
        val_auc = _val_auc(model, node_x, val, val_nbrs)
        bar.set_postfix(val_auc=f"{val_auc:.4f}")
        if val_auc > best_auc + 1e-5:
            best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return GNNTrainResult(best_epoch, best_auc, epoch + 1, time.perf_counter() - started)


def _val_auc(model: RelationGNN, node_x: torch.Tensor, val: Labelled, val_nbrs: Neighbours | None) -> float:
    if val_nbrs is None:
        return -1.0
    model.eval()
    with torch.inference_mode():
        logit, _, _ = model(val.embeddings, val_nbrs, model.node_messages(node_x), val.base_logits)
    return roc_auc(val.labels.numpy(), logit.numpy())
