"""What the demo world allows: a truth-reading oracle on the evaluation's retrieval queries.

The oracle scores each candidate with the demo generator's hidden truth (``truth.json``,
``truth_edges.tsv.gz``; never used in training): it knows the interest behind each test edge,
every product's interests, category and colour, and the complementary category pairs. It ranks
the same queries and negatives as ``rcml_graph.evaluate`` (suite seeds, ``eval.max_queries``,
20 negatives), so its Hit@5 is the ceiling a model can approach on each protocol. Ties are
broken at random in expectation, as the suite's metrics do.

    python scripts/demo_oracle.py --seeds 0 1 2 --out results/demo_oracle.json

Scores (the generator's rules, ``rcml_graph/data/demo.py``):
    also_bought with interest I: 1 if the candidate has interest I, x1.5 if in another category
        than the source (most also_bought targets cross categories);
    also_viewed: 1 if the candidate shares the source's category, x2 if also its colour;
    bought_together with interest I: 1 if the candidate has interest I and its category
        complements the source's under I;
    noise edges (no interest): every candidate scores 0 (chance).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch

from rcml_graph.data.demo_world import TRUTH_EDGES_FILE, TRUTH_FILE
from rcml_graph.data.graph_io import load_graph
from rcml_graph.eval.metrics import ranking_metrics
from rcml_graph.evaluation.edges import collect_edges, product_groups, select_queries
from rcml_graph.evaluation.negatives import random_negatives, sensitive_negatives
from rcml_graph.io_utils import atomic_write_json
from rcml_graph.relations import PRODUCT, RELATION_KINDS


def _truth_tables(data, raw_dir: Path) -> dict[str, torch.Tensor | dict]:
    truth = json.loads((raw_dir / TRUTH_FILE).read_text(encoding="utf-8"))
    asins = list(data[PRODUCT].product_id)
    interests = {name: i for i, name in enumerate(truth["interests"])}
    categories = {name: i for i, name in enumerate(truth["categories"])}
    products = [truth["products"][a] for a in asins]
    member = torch.zeros(len(asins), len(interests), dtype=torch.bool)
    for row, p in enumerate(products):
        member[row, [interests[i] for i in p["interests"]]] = True
    colours = {c: i for i, c in enumerate(sorted({p["colour"] for p in products}))}
    complement = torch.zeros(len(interests), len(categories), len(categories), dtype=torch.bool)
    for first, second, interest in truth["complementary_pairs"]:
        a, b, i = categories[first], categories[second], interests[interest]
        complement[i, a, b] = complement[i, b, a] = True
    node = {a: i for i, a in enumerate(asins)}
    context = {}
    with gzip.open(raw_dir / TRUTH_EDGES_FILE, "rt", encoding="utf-8") as rows:
        next(rows)
        for line in rows:
            kind, src, dst, interest = line.rstrip("\n").split("\t")
            if interest in interests and src in node and dst in node:
                context[(kind, node[src], node[dst])] = interests[interest]
    return {
        "member": member,
        "category": torch.tensor([categories[p["category"]] for p in products]),
        "colour": torch.tensor([colours[p["colour"]] for p in products]),
        "complement": complement,
        "context": context,
    }


def oracle_scores(t: dict, kind: str, source: torch.Tensor, interest: torch.Tensor,
                  candidates: torch.Tensor) -> torch.Tensor:
    """``(Q, C)`` oracle scores of ``candidates`` for queries of one relation kind."""
    cat, member = t["category"], t["member"]
    src_cat = cat[source][:, None]
    has_interest = interest >= 0
    in_interest = member[candidates, interest.clamp_min(0)[:, None]] & has_interest[:, None]
    if kind == "also_bought":
        return in_interest.double() * (1.0 + 0.5 * (cat[candidates] != src_cat).double())
    if kind == "also_viewed":
        same = (cat[candidates] == src_cat).double()
        return same * (1.0 + (t["colour"][candidates] == t["colour"][source][:, None]).double())
    fits = t["complement"][interest.clamp_min(0)[:, None], src_cat, cat[candidates]]
    return (in_interest & fits).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="datasets/demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-queries", type=int, default=500)
    parser.add_argument("--num-negatives", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.data_root)
    data = load_graph(root / "processed")
    edges = collect_edges(data)
    truth = _truth_tables(data, root / "raw")
    kind_of_desc = data.relation_kind_of_desc
    groups = product_groups(data)
    rows = []
    for seed in args.seeds:
        # the suite's generators (rcml_graph.evaluation.suite.run_tasks)
        generator = lambda offset: torch.Generator().manual_seed(seed * 1009 + offset)  # noqa: E731
        index = select_queries(edges, "test", args.max_queries, generator(1))
        source, target, desc = edges.source[index], edges.target[index], edges.desc_id[index]
        kinds = kind_of_desc[desc]
        for protocol, negatives in (
            ("random", random_negatives(edges, source, target, desc, args.num_negatives, generator(2))),
            ("sensitive", sensitive_negatives(edges, source, target, desc, groups, args.num_negatives,
                                              generator(4))),
        ):
            candidates = torch.cat([target[:, None], negatives.negatives], dim=1)
            scores = torch.zeros(candidates.shape, dtype=torch.float64)
            for k, kind in enumerate(RELATION_KINDS):
                rows_k = (kinds == k).nonzero().flatten()
                if rows_k.numel() == 0:
                    continue
                # the graph stores a pair once, in either direction; its interest is shared
                context = truth["context"]
                interest = torch.tensor([
                    context.get((kind, int(s), int(d)), context.get((kind, int(d), int(s)), -1))
                    for s, d in zip(source[rows_k], target[rows_k])])
                scores[rows_k] = oracle_scores(truth, kind, source[rows_k], interest, candidates[rows_k])
            subsets = {"all": torch.ones_like(kinds, dtype=torch.bool)}
            subsets.update({f"kind={kind}": kinds == k for k, kind in enumerate(RELATION_KINDS)})
            for subset, mask in subsets.items():
                if not bool(mask.any()):
                    continue
                metrics = ranking_metrics(scores[mask, 0], scores[mask, 1:])
                for metric in ("hit@1", "hit@5", "mrr"):
                    rows.append({"task": "retrieval" if protocol == "random" else "retrieval_sensitive",
                                 "method": "oracle", "seed": seed, "protocol": protocol,
                                 "subset": subset, "metric": metric, "value": metrics[metric],
                                 "n": metrics["n"]})
                print(f"seed {seed} {protocol:9s} {subset:20s} hit@5 {metrics['hit@5']:.3f} "
                      f"mrr {metrics['mrr']:.3f} (n={metrics['n']})")
    if args.out:
        atomic_write_json(Path(args.out), {"domain": "demo", "rows": rows})


if __name__ == "__main__":
    main()
