"""RelationGNN layers against a naive per-node reference, exact contributions, and GNN training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ecseq.evaluation.metrics import roc_auc
from ecseq.gnn import LAYERS, RelationGNN
from ecseq.gnn_training import GNNTrainConfig, Labelled, train_gnn
from ecseq.graph import Attachment, CompressedGraph, DenseAttacher, Edges

D, NODE_D, K, HIDDEN = 4, 5, 6, 8
# batch of 4 new nodes: node 1 has no edges
ROW = torch.tensor([0, 0, 2, 2, 2, 3])
NODE = torch.tensor([0, 2, 1, 3, 5, 4])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second thread only adds contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _edges(row: torch.Tensor = ROW, node: torch.Tensor = NODE, size: int = 4) -> Edges:
    return Edges(size, row, node, 1.0 - node.to(torch.float32) / 10)  # similarity: unused by the GNN


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


def _reference(model: RelationGNN, h, node_x, edges: Edges):
    """Per node, in plain loops: (z (B, H), per-edge contribution (E,), aggregated neighbour part (B, H))."""
    layer, name = model.layer, model.config["layer"]
    z, agg = torch.zeros(edges.size, HIDDEN), torch.zeros(edges.size, HIDDEN)
    share = torch.zeros(len(edges.row), HIDDEN)  # each edge's part of its node's z
    for i in range(edges.size):
        ids = torch.nonzero(edges.row == i).flatten()
        x = node_x[edges.node[ids]]
        own = F.pad(h[i], (0, NODE_D - D))
        if name == "sage_mean":
            msg = layer.nbr_lin(x)
            c = torch.full((len(ids), 1), 1.0 / max(len(ids), 1))
            agg[i] = (c * msg).sum(0)
            z[i] = layer.self_lin(h[i]) + agg[i]
        elif name == "sage_max":
            msg = F.relu(layer.pool(x))
            agg[i] = msg.max(0).values.clamp(min=0) if len(ids) else 0.0
            c = ((msg == agg[i]) & (msg > 0)).float()
            z[i] = layer.self_lin(h[i]) + agg[i]
        elif name == "gcn":
            msg = layer.lin(x)
            c = torch.full((len(ids), 1), 1.0 / (len(ids) + 1))
            agg[i] = (c * msg).sum(0)
            z[i] = layer.lin(own) / (len(ids) + 1) + agg[i] + layer.bias
        else:  # gat
            msg, own_msg = layer.lin(x), layer.lin(own)
            dst = own_msg @ layer.att_dst
            scores = F.leaky_relu(torch.cat([(dst + own_msg @ layer.att_src)[None], dst + msg @ layer.att_src]), 0.2)
            alpha = torch.softmax(scores, 0)
            c = alpha[1:, None]
            agg[i] = (c * msg).sum(0)
            z[i] = alpha[0] * own_msg + agg[i] + layer.bias
        if len(ids):
            share[ids] = c * msg
    active = model.out.weight[0] * (z > 0)
    contrib = (share * active[edges.row]).sum(1)
    return z, contrib, agg


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_layer_matches_per_node_reference(layer):
    model = _model(layer)
    h, node_x, base = _inputs()
    edges = _edges()
    logit, z, coef = model(h, edges, model.node_messages(node_x), base)
    ref_z, _, _ = _reference(model, h, node_x, edges)
    torch.testing.assert_close(z, ref_z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit, model.out(F.relu(ref_z)).squeeze(-1), atol=1e-5, rtol=1e-5)
    assert logit.shape == (4,) and z.shape == (4, HIDDEN)
    assert coef.shape[0] == len(ROW)


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_zero_edge_node_scored_from_own_embedding(layer):
    model = _model(layer)
    h, node_x, base = _inputs()
    logit, _, _ = model(h, _edges(), model.node_messages(node_x), base)
    # a different graph (other node features, other edges for the rest) leaves node 1 alone
    other_x = torch.randn(K, NODE_D) * 3
    other = _edges(torch.tensor([0, 2, 3, 3]), torch.tensor([5, 0, 1, 2]))
    logit2, _, _ = model(h, other, model.node_messages(other_x), base)
    assert logit[1] == pytest.approx(float(logit2[1]), abs=1e-6)
    assert not torch.allclose(logit[[0, 2, 3]], logit2[[0, 2, 3]])
    # and alone, with an empty edge list
    empty = Edges(1, torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    alone, _, coef = model(h[1:2], empty, model.node_messages(node_x), base[1:2])
    assert alone[0] == pytest.approx(float(logit[1]), abs=1e-6)
    assert coef.shape[0] == 0
    assert torch.isfinite(alone).all()


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_batch_scores_like_single_rows(layer):
    model = _model(layer)
    h, node_x, base = _inputs(batch=6)
    graph = CompressedGraph.from_members(node_x[:, :D].numpy(), np.array([0, 1, 0, 1, 1, 0]))
    edges = DenseAttacher(graph, Attachment(0.3, 3))(h)
    assert (edges.degree == 0).any() and (edges.degree > 1).any()
    messages = model.node_messages(node_x)
    logit, _, _ = model(h, edges, messages, base)
    for i in range(6):
        single, _, _ = model(h[i:i + 1], edges.take(torch.tensor([i])), messages, base[i:i + 1])
        assert single[0] == pytest.approx(float(logit[i]), abs=1e-5)


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_residual_starts_at_the_base_logit(layer):
    model = _model(layer, residual=True)
    h, node_x, base = _inputs()
    logit, _, _ = model(h, _edges(), model.node_messages(node_x), base)
    assert torch.equal(logit, base)
    edges = _edges()
    z, coef = model(h, edges, model.node_messages(node_x), base)[1:]
    assert torch.all(model.contributions(z, coef, edges, model.node_messages(node_x)) == 0)


def test_unknown_layer_rejected():
    with pytest.raises(ValueError, match="unknown GNN layer"):
        RelationGNN(D, NODE_D, "gin")


@pytest.mark.parametrize("layer", LAYERS)
@torch.no_grad()
def test_contributions_are_exact(layer):
    """Each edge's contribution is out.w . (relu'(z) * its share of the aggregate); they sum to the
    aggregated part's effect on the logit, computed independently."""
    model = _model(layer)
    h, node_x, base = _inputs(seed=3)
    edges = _edges()
    messages = model.node_messages(node_x)
    _, z, coef = model(h, edges, messages, base)
    contrib = model.contributions(z, coef, edges, messages)
    ref_z, ref_contrib, agg = _reference(model, h, node_x, edges)
    assert contrib.shape == (len(ROW),)
    torch.testing.assert_close(contrib, ref_contrib, atol=1e-5, rtol=1e-5)
    effect = (model.out.weight[0] * (ref_z > 0) * agg).sum(1)
    per_node = torch.zeros(4).index_add_(0, edges.row, contrib)
    torch.testing.assert_close(per_node, effect, atol=1e-5, rtol=1e-5)
    assert per_node[1] == 0  # no edges, nothing to explain
    assert contrib.abs().sum() > 0


@torch.no_grad()
def test_sage_mean_contribution_is_the_logit_change_without_the_edge():
    """With the relu pattern unchanged, removing an edge's message (keeping the other edges'
    coefficients) moves the logit by exactly its contribution."""
    model = _model("sage_mean")
    with torch.no_grad():
        model.layer.self_lin.bias.fill_(5.0)  # every z > 0: the relu pattern cannot flip
    h, node_x, base = _inputs()
    edges = _edges()
    messages = model.node_messages(node_x)
    logit, z, coef = model(h, edges, messages, base)
    assert torch.all(z > 0)
    contrib = model.contributions(z, coef, edges, messages)
    for e in range(len(ROW)):
        i = int(ROW[e])
        z_without = z[i] - coef[e] * messages[NODE[e]]
        logit_without = model.out(F.relu(z_without)).squeeze(-1)
        assert float(logit[i] - logit_without) == pytest.approx(float(contrib[e]), abs=1e-5)


# ---------------------------------------------------------------- training


def _separable(n: int, seed: int):
    """Labels readable from which cluster an embedding is near; the encoder's logits are noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float32)
    emb = centres[labels] + rng.normal(0, 0.6, (n, D)).astype(np.float32)
    return emb, rng.normal(0, 0.3, n).astype(np.float32), labels


def _fit(layer: str, epochs: int, patience: int):
    graph_emb, _, graph_labels = _separable(40, seed=0)
    graph = CompressedGraph.from_assignment(graph_emb, graph_labels, graph_labels * 2 + np.arange(40) % 2)
    train, val = Labelled.of(*_separable(120, seed=1)), Labelled.of(*_separable(60, seed=2))
    torch.manual_seed(0)
    model = RelationGNN(D, D + 1, layer, hidden=8)
    attacher = DenseAttacher(graph, Attachment(0.0, 2))
    node_x = torch.from_numpy(graph.node_features(True))
    config = GNNTrainConfig(epochs=epochs, batch_size=64, lr=0.05, patience=patience, progress=False)
    result = train_gnn(model, node_x, train, attacher, val, attacher, config)
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

