"""RelationGNN layers against a naive per-node reference, exact contributions, and GNN training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ecseq.gnn import LAYERS, RelationGNN
from ecseq.gnn_training import GNNTrainConfig, Labelled, train_gnn
from ecseq.graph import Attachment, CompressedGraph, DenseAttacher, Neighbours
from ecseq.ranking import roc_auc

D, NODE_D, K, HIDDEN = 4, 5, 6, 8
# batch of 4 new nodes in 3 slots: node 1 has no edges; empty slots point at node 0 with weight 0
INDEX = torch.tensor([[0, 2, 0], [0, 0, 0], [1, 3, 5], [4, 0, 0]])
WEIGHT = torch.tensor([[1.0, 1, 0], [0, 0, 0], [1, 1, 1], [1, 0, 0]])




def _nbrs(index: torch.Tensor = INDEX, weight: torch.Tensor = WEIGHT) -> Neighbours:
    sim = (1.0 - index.to(torch.float32) / 10) * weight  # similarity: unused by the GNN
    return Neighbours(index, sim, weight)


def _model(layer: str, residual: bool = False, seed: int = 0) -> RelationGNN:
    torch.manual_seed(seed)
    model = RelationGNN(D, NODE_D, layer, hidden=HIDDEN, residual=residual)
    if residual:  # leave the zero init alone
        return model.eval()
    with torch.no_grad():  # make the head large enough that every part of z matters
        model.out.weight.normal_(0, 1.0)
        model.out.bias.normal_(0, 1.0)
        if layer in ("gcn", "gat"):
            model.layer.bias.normal_(0, 0.5)
    return model.eval()


def _inputs(seed: int = 1, batch: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, D, generator=g), torch.randn(K, NODE_D, generator=g), torch.randn(batch, generator=g))


def _reference(model: RelationGNN, h, node_x, nbrs: Neighbours):
    """Per node, in plain loops over its edges only:
    (z (B, H), per-slot contribution (B, M), aggregated neighbour part (B, H))."""
    layer, name = model.layer, model.config["layer"]
    b, m = nbrs.index.shape
    z, agg = torch.zeros(b, HIDDEN), torch.zeros(b, HIDDEN)
    share = torch.zeros(b, m, HIDDEN)  # each slot's part of its node's z
    for i in range(b):
        slots = torch.nonzero(nbrs.weight[i] > 0).flatten()
        x = node_x[nbrs.index[i, slots]]
        own = F.pad(h[i], (0, NODE_D - D))
        if name == "sage_mean":
            msg = layer.nbr_lin(x)
            c = torch.full((len(slots), 1), 1.0 / max(len(slots), 1))
            agg[i] = (c * msg).sum(0)
            z[i] = layer.self_lin(h[i]) + agg[i]
        elif name == "sage_max":
            msg = F.relu(layer.pool(x))
            agg[i] = msg.max(0).values.clamp(min=0) if len(slots) else 0.0
            c = ((msg == agg[i]) & (msg > 0)).float()
            z[i] = layer.self_lin(h[i]) + agg[i]
        elif name == "gcn":
            msg = layer.lin(x)
            c = torch.full((len(slots), 1), 1.0 / (len(slots) + 1))
            agg[i] = (c * msg).sum(0)
            z[i] = layer.lin(own) / (len(slots) + 1) + agg[i] + layer.bias
        else:  # gat
            msg, own_msg = layer.lin(x), layer.lin(own)
            dst = own_msg @ layer.att_dst
            scores = F.leaky_relu(torch.cat([(dst + own_msg @ layer.att_src)[None], dst + msg @ layer.att_src]), 0.2)
            alpha = torch.softmax(scores, 0)
            c = alpha[1:, None]
            agg[i] = (c * msg).sum(0)
            z[i] = alpha[0] * own_msg + agg[i] + layer.bias
        if len(slots):
            share[i, slots] = c * msg
    active = model.out.weight[0] * (z > 0)
    contrib = (share * active[:, None, :]).sum(2)
    return z, contrib, agg


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_layer_matches_per_node_reference(layer):
    model = _model(layer)
    h, node_x, base = _inputs()
    nbrs = _nbrs()
    logit, z, coef = model(h, nbrs, model.node_messages(node_x), base)
    ref_z, _, _ = _reference(model, h, node_x, nbrs)
    torch.testing.assert_close(z, ref_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit, model.out(F.relu(ref_z)).squeeze(-1), atol=1e-5, rtol=1e-5)
    assert logit.shape == (4,) and z.shape == (4, HIDDEN)
    assert coef.shape[:2] == INDEX.shape
    assert torch.all(coef[WEIGHT == 0] == 0)  # empty slots get no share


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_empty_slots_are_ignored_whatever_they_point_at(layer):
    """Only the weight makes a slot an edge: padding that points at other nodes, or extra
    padding slots, change nothing."""
    model = _model(layer)
    h, node_x, base = _inputs()
    messages = model.node_messages(node_x)
    logit, z, _ = model(h, _nbrs(), messages, base)
    scrambled = torch.where(WEIGHT > 0, INDEX, torch.tensor([[5, 4, 3]]))
    wider_index = torch.cat([scrambled, torch.tensor([[2], [1], [0], [3]])], 1)
    wider_weight = torch.cat([WEIGHT, torch.zeros(4, 1)], 1)
    for nbrs in (_nbrs(scrambled), _nbrs(wider_index, wider_weight)):
        logit2, z2, _ = model(h, nbrs, messages, base)
        torch.testing.assert_close(z2, z, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(logit2, logit, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_zero_neighbour_node_scored_from_own_embedding(layer):
    model = _model(layer)
    h, node_x, base = _inputs()
    logit, _, _ = model(h, _nbrs(), model.node_messages(node_x), base)
    # a different graph (other node features, other edges for the rest) leaves node 1 alone
    other_x = torch.randn(K, NODE_D) * 3
    other = _nbrs(torch.tensor([[5, 0], [3, 2], [0, 0], [1, 2]]), torch.tensor([[1.0, 0], [0, 0], [1, 0], [1, 1]]))
    logit2, _, _ = model(h, other, model.node_messages(other_x), base)
    assert logit[1] == pytest.approx(float(logit2[1]), abs=1e-6)
    assert not torch.allclose(logit[[0, 2, 3]], logit2[[0, 2, 3]])
    # and alone, with one empty slot (what an attacher gives when nothing passes epsilon)
    empty = Neighbours(torch.zeros(1, 1, dtype=torch.int64), torch.zeros(1, 1), torch.zeros(1, 1))
    alone, _, coef = model(h[1:2], empty, model.node_messages(node_x), base[1:2])
    assert alone[0] == pytest.approx(float(logit[1]), abs=1e-6)
    assert torch.all(coef == 0)
    assert torch.isfinite(alone).all()
    # the node's own score, computed without the layer's aggregation at all
    if layer in ("sage_mean", "sage_max"):
        own_z = model.layer.self_lin(h[1])
    else:  # gcn: a closed neighbourhood of one; gat: all attention on itself
        own_z = model.layer.lin(F.pad(h[1], (0, NODE_D - D))) + model.layer.bias
    assert alone[0] == pytest.approx(float(model.out(F.relu(own_z))), abs=1e-5)


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_batch_scores_like_single_rows(layer):
    model = _model(layer)
    h, node_x, base = _inputs(batch=6)
    graph = CompressedGraph.from_members(node_x[:, :D].numpy(), np.array([0, 1, 0, 1, 1, 0]))
    nbrs = DenseAttacher(graph, Attachment(0.3, 3))(h)
    assert (nbrs.degree == 0).any() and (nbrs.degree > 1).any()
    messages = model.node_messages(node_x)
    logit, _, coef = model(h, nbrs, messages, base)
    contrib = model.contributions(*model(h, nbrs, messages, base)[1:], nbrs, messages)
    for i in range(6):
        one = nbrs.take(torch.tensor([i]))
        single, z1, coef1 = model(h[i:i + 1], one, messages, base[i:i + 1])
        assert single[0] == pytest.approx(float(logit[i]), abs=1e-5)
        torch.testing.assert_close(coef1[0], coef[i], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(model.contributions(z1, coef1, one, messages)[0], contrib[i], atol=1e-5, rtol=1e-5)
        # and like attaching that event on its own
        alone, _, _ = model(h[i:i + 1], DenseAttacher(graph, Attachment(0.3, 3))(h[i:i + 1]), messages, base[i:i + 1])
        assert alone[0] == pytest.approx(float(logit[i]), abs=1e-5)


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_residual_starts_at_the_base_logit(layer):
    model = _model(layer, residual=True)
    h, node_x, base = _inputs()
    nbrs = _nbrs()
    logit, z, coef = model(h, nbrs, model.node_messages(node_x), base)
    assert torch.equal(logit, base)
    contrib = model.contributions(z, coef, nbrs, model.node_messages(node_x))
    assert contrib.shape == INDEX.shape
    assert torch.all(contrib == 0)


def test_unknown_layer_rejected():
    with pytest.raises(ValueError, match="unknown GNN layer"):
        RelationGNN(D, NODE_D, "gin")


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_contributions_are_exact(layer):
    """Each slot's contribution is out.w . (relu'(z) * its share of the aggregate); they sum to the
    aggregated part's effect on the logit, computed independently."""
    model = _model(layer)
    h, node_x, base = _inputs(seed=3)
    nbrs = _nbrs()
    messages = model.node_messages(node_x)
    _, z, coef = model(h, nbrs, messages, base)
    contrib = model.contributions(z, coef, nbrs, messages)
    ref_z, ref_contrib, agg = _reference(model, h, node_x, nbrs)
    assert contrib.shape == INDEX.shape
    torch.testing.assert_close(contrib, ref_contrib, atol=1e-5, rtol=1e-5)
    effect = (model.out.weight[0] * (ref_z > 0) * agg).sum(1)
    torch.testing.assert_close(contrib.sum(1), effect, atol=1e-5, rtol=1e-5)
    assert torch.all(contrib[WEIGHT == 0] == 0)  # empty slots, and node 1 with no edges, explain nothing
    assert contrib[WEIGHT > 0].abs().sum() > 0


def _saturated(layer: str):
    """A model whose every z > 0, so the relu pattern cannot flip when a message is removed."""
    model = _model(layer)
    model.layer.self_lin.bias.fill_(5.0)
    h, node_x, base = _inputs()
    nbrs = _nbrs()
    messages = model.node_messages(node_x)
    logit, z, coef = model(h, nbrs, messages, base)
    assert torch.all(z > 0)
    return model, logit, z, coef, messages, model.contributions(z, coef, nbrs, messages)


@torch.no_grad()
def test_sage_mean_contribution_is_the_logit_change_without_the_edge():
    """With the relu pattern unchanged, removing a slot's message (keeping the other slots'
    coefficients) moves the logit by exactly its contribution."""
    model, logit, z, coef, messages, contrib = _saturated("sage_mean")
    for i, m in torch.nonzero(WEIGHT > 0).tolist():
        z_without = z[i] - coef[i, m] * messages[INDEX[i, m]]
        logit_without = model.out(F.relu(z_without)).squeeze(-1)
        assert float(logit[i] - logit_without) == pytest.approx(float(contrib[i, m]), abs=1e-5)


@torch.no_grad()
def test_sage_max_contributions_sum_to_the_logit_change_without_neighbours():
    """Max pooling with the relu pattern unchanged: each dimension of the max is credited to the
    slot that won it, so removing every slot at once moves the logit by the contributions' sum
    (removing one slot alone lets a runner-up take over, so that is not the per-slot test)."""
    model, logit, z, coef, messages, contrib = _saturated("sage_max")
    h, _, base = _inputs()
    without, _, _ = model(h, _nbrs(INDEX, torch.zeros_like(WEIGHT)), messages, base)
    torch.testing.assert_close(logit - without, contrib.sum(1), atol=1e-5, rtol=1e-5)
    # each dimension is credited to exactly one slot when it has a positive max, to none otherwise
    assert coef.shape == (4, INDEX.shape[1], HIDDEN)
    agg = (messages[INDEX] * WEIGHT[:, :, None]).max(1).values
    torch.testing.assert_close(coef.sum(1), (agg > 0).float())


# ---------------------------------------------------------------- training


def _separable(n: int, seed: int):
    """Labels readable from which cluster an embedding is near; the encoder's logits are noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float32)
    emb = centres[labels] + rng.normal(0, 0.6, (n, D)).astype(np.float32)
    return emb, rng.normal(0, 0.3, n).astype(np.float32), labels


class _Counting:
    """An attacher that counts its calls: neighbours are found once, not per epoch or batch."""

    def __init__(self, attacher) -> None:
        self.attacher, self.rows = attacher, []

    def __call__(self, embeddings: torch.Tensor) -> Neighbours:
        self.rows.append(len(embeddings))
        return self.attacher(embeddings)


def _fit(layer: str, epochs: int, patience: int):
    graph_emb, _, graph_labels = _separable(40, seed=0)
    graph = CompressedGraph.from_assignment(graph_emb, graph_labels, graph_labels * 2 + np.arange(40) % 2)
    train, val = Labelled.of(*_separable(120, seed=1)), Labelled.of(*_separable(60, seed=2))
    torch.manual_seed(0)
    model = RelationGNN(D, D + 1, layer, hidden=8)
    attacher = DenseAttacher(graph, Attachment(0.0, 2))
    node_x = torch.from_numpy(graph.node_features(True))
    config = GNNTrainConfig(epochs=epochs, batch_size=64, lr=0.05, patience=patience, progress=False)
    train_attacher, val_attacher = _Counting(attacher), _Counting(attacher)
    result = train_gnn(model, node_x, train, train_attacher, val, val_attacher, config)
    assert train_attacher.rows == [len(train)] and val_attacher.rows == [len(val)]
    return model, result, (graph, node_x, val, attacher)


@pytest.mark.parametrize("layer", ["sage_mean", "gat"])
def test_train_gnn_beats_the_encoder_and_keeps_the_best_epoch(layer):
    model, result, (graph, node_x, val, attacher) = _fit(layer, epochs=40, patience=4)
    base_auc = roc_auc(val.labels.numpy(), val.base_logits.numpy())
    assert base_auc < 0.75
    assert result.best_val_auc > max(0.95, base_auc + 0.2)
    assert not model.training
    with torch.inference_mode():
        logit, _, _ = model(val.embeddings, attacher(val.embeddings), model.node_messages(node_x), val.base_logits)
    assert roc_auc(val.labels.numpy(), logit.numpy()) == pytest.approx(result.best_val_auc)
    # the weights are those of the best epoch, not the last one run
    assert result.epochs_run > result.best_epoch + 1
    best_only, again, _ = _fit(layer, epochs=result.best_epoch + 1, patience=100)
    assert again.best_epoch == result.best_epoch
    for name, value in best_only.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)
    assert result.seconds >= 0


def test_train_gnn_attaches_the_alignment_set_once():
    graph_emb, _, graph_labels = _separable(40, seed=0)
    graph = CompressedGraph.from_assignment(graph_emb, graph_labels, graph_labels * 2 + np.arange(40) % 2)
    train, val = Labelled.of(*_separable(50, seed=1)), Labelled.of(*_separable(30, seed=2))
    align = Labelled.of(graph.centroids, np.zeros(graph.k, dtype=np.float32), graph.positive_rate)
    torch.manual_seed(0)
    model = RelationGNN(D, D + 1, "sage_mean", hidden=8)
    attacher = DenseAttacher(graph, Attachment(0.0, 2))
    train_attacher, val_attacher = _Counting(attacher), _Counting(attacher)
    config = GNNTrainConfig(epochs=3, batch_size=16, lr=0.05, patience=100, align_weight=0.5, progress=False)
    result = train_gnn(model, torch.from_numpy(graph.node_features(True)), train, train_attacher, val,
                       val_attacher, config, align=align)
    assert train_attacher.rows == [len(train), graph.k] and val_attacher.rows == [len(val)]
    assert result.epochs_run == 3 and 0 <= result.best_epoch < 3
