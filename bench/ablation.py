"""Ablation of ECSeq's design choices on one data set and scenario, several seeds.

The encoder is trained once per seed; every variant of the relation part is then fitted on the
same frozen embeddings and scored on the same test events, so differences come from the variant
alone. Writes bench/results/ablation-<dataset>-<scenario>.json and prints mean +- std.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import faiss
import numpy as np

from bench.common import write_result
from ecseq.data.builtin import load_dataset
from ecseq.data.splits import split_by_time
from ecseq.encoders.training import EncoderTrainConfig, embed_rows
from ecseq.evaluation.experiment import ExperimentConfig, fit_and_score, prepare, relation_for_seed
from ecseq.evaluation.head import LogisticHead
from ecseq.gnn_training import GNNTrainConfig
from ecseq.graph import Attachment
from ecseq.ranking import summarize
from ecseq.relation import RelationConfig, fit_compressed

BASE = RelationConfig(gnn=GNNTrainConfig(progress=False))
VARIANTS: dict[str, RelationConfig] = {
    "default (top-10, disjoint, balanced k-means, SAGE-mean)": BASE,
    "shared centroids": replace(BASE, centroids="shared"),
    "alignment loss (weight 1)": replace(BASE, gnn=replace(BASE.gnn, align_weight=1.0)),
    "cos > 0.99 (paper), max 64": replace(BASE, attachment=Attachment(0.99)),
    "top-5": replace(BASE, attachment=Attachment(-1.0, 5)),
    "top-20": replace(BASE, attachment=Attachment(-1.0, 20)),
    "plain k-means": replace(BASE, compression="kmeans"),
    "structural (AGC-style)": replace(BASE, compression="structural"),
    "no node positive rates": replace(BASE, use_label_rate=False),
    "no residual": replace(BASE, residual=False),
    "GCN": replace(BASE, layer="gcn"),
    "GAT": replace(BASE, layer="gat"),
    "SAGE-max": replace(BASE, layer="sage_max"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--scenario", default="refresh", choices=("standard", "refresh"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default="", help="comma-separated variant names (prefixes) to run; default all")
    args = parser.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = {n: c for n, c in VARIANTS.items() if not wanted or any(n.startswith(w) for w in wanted)}
    faiss.omp_set_num_threads(1)
    table = load_dataset(args.dataset).events()
    split = split_by_time(table)
    config = ExperimentConfig(scenario=args.scenario, encoder=EncoderTrainConfig(progress=False), relation=BASE)
    rows: dict[str, list[dict]] = {"encoder": [], "head": [], **{name: [] for name in variants}}
    for seed in range(args.seeds):
        p = prepare(table, split, config, seed)
        rows["encoder"].append(summarize(p.y_test, p.encoder_scores.scores))
        head = LogisticHead.fit(p.fit_embeddings, p.fit_labels)
        rows["head"].append(summarize(p.y_test, head.logits(embed_rows(p.encoder, p.windows, p.test_rows))))
        for name, relation in variants.items():
            result = fit_and_score(p, fit_compressed, relation_for_seed(relation, seed))
            rows[name].append({**summarize(p.y_test, result.scores), **result.extra})
            print(f"seed {seed} {name}: AP {rows[name][-1]['ap']:.4f}", file=sys.stderr, flush=True)
    table_out = {}
    print(f"{'variant':<58}{'AUC':>16}{'AP':>16}{'R@P0.9':>16}")
    for name, runs in rows.items():
        stats = {k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs])))
                 for k in ("auc", "ap", "r_at_p90")}
        table_out[name] = {k: {"mean": m, "std": s} for k, (m, s) in stats.items()}
        print(f"{name:<58}" + "".join(f"{m:>10.4f}±{s:.4f}" for m, s in stats.values()))
    path = write_result(f"ablation-{args.dataset}-{args.scenario}", {"seeds": args.seeds, "variants": table_out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
