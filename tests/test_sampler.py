import mmap
import pickle
import sys
import threading
from collections import Counter

import pytest
import torch
from torch_geometric.data import HeteroData

from rcml_graph.relations import (
    RELATION_KINDS,
    SELF_RELATION_TEXT,
    edge_type,
    reverse_edge_type,
)
from rcml_graph.sampling import (
    NO_NEGATIVE,
    RELATION_SPECIFIC,
    SAME_CATEGORY,
    RelationPairSampler,
    expand_segments,
    false_negative_mask,
    false_negative_product_mask,
)
from rcml_graph.sampling.ops import HUGE_PAGE_BYTES, huge_page_copy

# 7 products. Descriptions: 0 self, 1-2 also_bought, 3 also_viewed, 4 buy_after_viewing.
DESC_KIND = [-1, 0, 0, 1, 3]
CATEGORY = [0, 0, 0, 1, -1, 1, 0]
# (src, dst, desc, split) per relation kind; forward direction only.
EDGES = {
    "also_bought": [(0, 1, 1, 0), (0, 2, 1, 0), (0, 2, 2, 0), (1, 2, 1, 0), (3, 4, 1, 1)],
    "also_viewed": [(0, 3, 3, 0), (2, 5, 3, 2), (4, 6, 3, 0)],
    "buy_after_viewing": [(1, 3, 4, 0), (6, 0, 4, 0)],
}
# Training triples, written out by hand: symmetric kinds in both directions, the directed
# buy_after_viewing only as stored; the val edge (3, 4) and test edge (2, 5) are absent.
TRAIN_TRIPLES = {
    (0, 1, 1), (1, 0, 1), (0, 2, 1), (2, 0, 1), (0, 2, 2), (2, 0, 2), (1, 2, 1), (2, 1, 1),
    (0, 3, 3), (3, 0, 3), (4, 6, 3), (6, 4, 3),
    (1, 3, 4), (6, 0, 4),
}


def make_graph(edges: dict, num_products: int, category: list[int], desc_kind: list[int]) -> HeteroData:
    data = HeteroData()
    data["product"].num_nodes = num_products
    data["product"].category_id = torch.tensor(category)
    data["product"].text = [f"product {i}" for i in range(num_products)]
    data["product"].asin = [f"A{i:04d}" for i in range(num_products)]
    for kind, rows in edges.items():
        t = torch.tensor(rows, dtype=torch.long).view(-1, 4)
        for et, ei in ((edge_type(kind), t[:, :2].T), (reverse_edge_type(kind), t[:, [1, 0]].T)):
            data[et].edge_index = ei.contiguous()
            data[et].desc_id = t[:, 2].clone()
            data[et].split = t[:, 3].to(torch.uint8)
    data.relation_text = [SELF_RELATION_TEXT] + [f"desc {i}" for i in range(1, len(desc_kind))]
    data.relation_kind_of_desc = torch.tensor(desc_kind)
    return data


@pytest.fixture
def graph() -> HeteroData:
    return make_graph(EDGES, 7, CATEGORY, DESC_KIND)


def random_graph(seed: int, num_products: int = 30, num_edges: int = 160) -> tuple[HeteroData, set]:
    """A random graph and its training triples, computed independently of the sampler."""
    g = torch.Generator().manual_seed(seed)
    kinds = RELATION_KINDS[:2] + ("buy_after_viewing",)
    desc_kind = [-1] + [k for k in range(4) for _ in range(2)]  # 2 descriptions per kind
    edges, triples = {}, set()
    for kind in kinds:
        k = RELATION_KINDS.index(kind)
        src = torch.randint(0, num_products, (num_edges,), generator=g)
        dst = torch.randint(0, num_products, (num_edges,), generator=g)
        desc = 1 + 2 * k + torch.randint(0, 2, (num_edges,), generator=g)
        split = torch.randint(0, 3, (num_edges,), generator=g) % 2 * torch.randint(1, 3, (num_edges,), generator=g)
        rows = list(zip(src.tolist(), dst.tolist(), desc.tolist(), split.tolist()))
        edges[kind] = rows
        for s, d, r, sp in rows:
            if sp == 0 and s != d:
                triples.add((s, d, r))
                if kind != "buy_after_viewing":
                    triples.add((d, s, r))
    category = torch.randint(-1, 4, (num_products,), generator=g).tolist()
    return make_graph(edges, num_products, category, desc_kind), triples


def epoch_batches(sampler: RelationPairSampler) -> list:
    return list(sampler)


def positive_triples(batches: list) -> list[tuple[int, int, int]]:
    out = []
    for b in batches:
        keep = ~b.is_self
        out += list(zip(b.src[keep].tolist(), b.dst[keep].tolist(), b.desc_id[keep].tolist()))
    return out


def test_expand_segments_known_answer():
    row, pos = expand_segments(torch.tensor([5, 0, 9]), torch.tensor([2, 0, 3]))
    assert row.tolist() == [0, 0, 2, 2, 2]
    assert pos.tolist() == [5, 6, 9, 10, 11]


@pytest.mark.parametrize("batch_size,k", [(1, 1), (2, 2), (3, 4), (100, 3)])
def test_epoch_covers_each_training_pair_once(graph, batch_size, k):
    sampler = RelationPairSampler(graph, batch_size=batch_size, positives_per_anchor=k)
    batches = epoch_batches(sampler)
    counts = Counter(positive_triples(batches))
    assert set(counts) == TRAIN_TRIPLES  # val (3, 4) / test (2, 5) and reverse b-a-v absent
    assert all(c == 1 for c in counts.values())
    assert len(batches) == len(sampler)
    for b in batches:
        # an anchor slot brings at most K positives
        anchors = b.src[b.is_self]
        assert b.num_pairs - anchors.numel() <= k * anchors.numel()
    assert sampler.state_dict()["epoch"] == 1  # the epoch advanced after iteration


def test_slots_split_anchor_neighbours(graph):
    # anchor 0 has 4 training pairs -> with K = 2 exactly 2 slots of 2 pairs
    sampler = RelationPairSampler(graph, batch_size=1, positives_per_anchor=2)
    per_batch = [(b.src[b.is_self].tolist(), int((~b.is_self).sum())) for b in sampler]
    assert sorted(n for anchors, n in per_batch if anchors == [0]) == [2, 2]
    # 9 slots: anchors 0, 1, 2 (4, 3, 3 pairs) two each; 3, 4, 6 (1, 1, 2 pairs) one each
    assert len(per_batch) == len(sampler) == 9


def test_self_pairs(graph):
    sampler = RelationPairSampler(graph, batch_size=2, positives_per_anchor=2)
    for b in sampler:
        s = b.is_self
        assert torch.equal(b.src[s], b.dst[s])
        assert (b.desc_id[s] == 0).all() and (b.desc_id[~s] > 0).all()
        # self pairs come last, one per slot
        assert s[-int(s.sum()):].all()
    no_self = RelationPairSampler(graph, batch_size=2, positives_per_anchor=2, include_self_pairs=False)
    assert not any(b.is_self.any() for b in no_self)
    assert sum(b.num_pairs for b in no_self) == len(TRAIN_TRIPLES)


def hard_negatives_by_pair(sampler) -> dict:
    out = {}
    for b in sampler:
        for i in range(b.num_pairs):
            key = (int(b.src[i]), int(b.dst[i]), int(b.desc_id[i]))
            out[key] = (b.hard_neg[i].tolist(), b.hard_neg_kind[i].tolist())
    return out


def test_relation_specific_negatives_known_answers(graph):
    sampler = RelationPairSampler(graph, batch_size=3, relation_negative_fraction=1.0,
                                  rejection_rounds=16)
    neg = hard_negatives_by_pair(sampler)
    # anchor 0 neighbours: 1 (d1), 2 (d1, d2), 3 (d3). Under d1, 2 is linked -> only 3.
    assert neg[(0, 1, 1)] == ([3], [RELATION_SPECIFIC])
    assert neg[(0, 2, 1)] == ([3], [RELATION_SPECIFIC])
    # anchor 6: 4 (d3), 0 (d4)
    assert neg[(6, 0, 4)] == ([4], [RELATION_SPECIFIC])
    assert neg[(6, 4, 3)] == ([0], [RELATION_SPECIFIC])
    # anchor 4 has no other description -> falls back to its category: none (-1)
    assert neg[(4, 6, 3)] == ([NO_NEGATIVE], [NO_NEGATIVE])
    # anchor 3: no other description; category 1 = {3, 5}; (3, 5) is not linked -> 5
    assert neg[(3, 0, 3)] == ([5], [SAME_CATEGORY])
    # self pair of anchor 6: any neighbour is relation-specific
    assert neg[(6, 6, 0)][0][0] in {0, 4}


def test_same_category_negatives_known_answers(graph):
    sampler = RelationPairSampler(graph, batch_size=3, relation_negative_fraction=0.0,
                                  rejection_rounds=16)
    neg = hard_negatives_by_pair(sampler)
    # category 0 = {0, 1, 2, 6}; anchor 0 under d1 is linked to 1 and 2 -> only 6
    assert neg[(0, 1, 1)] == ([6], [SAME_CATEGORY])
    # anchor 1 under d1 is linked to 0 and 2 -> 6
    assert neg[(1, 2, 1)] == ([6], [SAME_CATEGORY])
    # anchor 2 under d2 is linked to 0 only -> 1 or 6
    assert neg[(2, 0, 2)][0][0] in {1, 6}
    # anchor 4 has no category -> falls back to relation-specific: none
    assert neg[(4, 6, 3)] == ([NO_NEGATIVE], [NO_NEGATIVE])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_negative_invariants_on_random_graph(seed):
    data, triples = random_graph(seed)
    category = data["product"].category_id.tolist()
    sampler = RelationPairSampler(data, batch_size=5, positives_per_anchor=3, num_hard_negatives=3,
                                  seed=seed)
    found = Counter()
    for b in sampler:
        for i in range(b.num_pairs):
            s, r = int(b.src[i]), int(b.desc_id[i])
            for t, kind in zip(b.hard_neg[i].tolist(), b.hard_neg_kind[i].tolist()):
                found[kind] += 1
                if kind == NO_NEGATIVE:
                    assert t == -1
                    continue
                assert t != s
                assert (s, t, r) not in triples  # never linked under the positive's description
                if kind == SAME_CATEGORY:
                    assert category[t] == category[s] >= 0
                else:  # linked to the anchor under another description
                    assert any((s, t, other) in triples for other in range(1, 9) if other != r)
    assert found[SAME_CATEGORY] > 0 and found[RELATION_SPECIFIC] > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_false_negative_mask_matches_brute_force(seed):
    data, triples = random_graph(seed)
    sampler = RelationPairSampler(data, batch_size=6, positives_per_anchor=3, num_hard_negatives=2,
                                  seed=seed)
    assert set(positive_triples(list(sampler))) == triples
    for b in sampler:
        mask = false_negative_mask(b, with_hard_negatives=True)
        cols = torch.cat([b.dst, b.hard_neg.flatten()]).tolist()
        src, desc = b.src.tolist(), b.desc_id.tolist()
        expected = torch.tensor([[(src[i], c, desc[i]) in triples or (desc[i] == 0 and c == src[i])
                                  for c in cols] for i in range(b.num_pairs)])
        assert torch.equal(mask, expected)
        assert torch.equal(false_negative_mask(b), expected[:, :b.num_pairs])
        assert mask.diagonal().all()
        products = b.products.tolist()
        by_product = torch.tensor([[(src[i], v, desc[i]) in triples or (desc[i] == 0 and v == src[i])
                                    for v in products] for i in range(b.num_pairs)])
        assert torch.equal(false_negative_product_mask(b), by_product)


@pytest.mark.parametrize("seed", [0, 3])
def test_any_link_scope_masks_every_product_linked_to_the_anchor(seed):
    data, triples = random_graph(seed)
    # either direction: the graph's buy_after_viewing edges are directed
    linked = {(s, d) for s, d, _ in triples} | {(d, s) for s, d, _ in triples}
    plain = RelationPairSampler(data, batch_size=6, positives_per_anchor=3, num_hard_negatives=2, seed=seed,
                                relation_negative_fraction=0.0)
    sampler = RelationPairSampler(data, batch_size=6, positives_per_anchor=3, num_hard_negatives=2,
                                  seed=seed, false_negative_scope="any_link", relation_negative_fraction=0.0)
    widened = 0
    for b, narrow in zip(sampler, plain):
        # same pairs and negatives: only the mask differs
        assert torch.equal(b.src, narrow.src) and torch.equal(b.hard_neg, narrow.hard_neg)
        mask = false_negative_mask(b, with_hard_negatives=True)
        cols = torch.cat([b.dst, b.hard_neg.flatten()]).tolist()
        src = b.src.tolist()
        expected = torch.tensor([[(src[i], c) in linked or c == src[i] and bool(b.is_self[i])
                                  for c in cols] for i in range(b.num_pairs)])
        assert torch.equal(mask, expected)
        narrow_mask = false_negative_mask(narrow, with_hard_negatives=True)
        assert not (narrow_mask & ~mask).any()
        widened += int((mask & ~narrow_mask).sum())
        products = b.products.tolist()
        by_product = torch.tensor([[(src[i], v) in linked or v == src[i] and bool(b.is_self[i])
                                    for v in products] for i in range(b.num_pairs)])
        assert torch.equal(false_negative_product_mask(b), by_product)
    assert widened > 0  # the graph has anchors linked under several descriptions


def test_false_negative_mask_known_answer(graph):
    sampler = RelationPairSampler(graph, batch_size=100, num_hard_negatives=0)
    (b,) = list(sampler)
    mask = false_negative_mask(b)
    i = next(k for k in range(b.num_pairs) if (b.src[k], b.dst[k], b.desc_id[k]) == (0, 1, 1))
    # the targets 1 and 2 are linked to anchor 0 under d1, nothing else is
    assert set(b.dst[mask[i]].tolist()) == {1, 2}
    j = next(k for k in range(b.num_pairs) if b.is_self[k] and b.src[k] == 0)
    assert set(b.dst[mask[j]].tolist()) == {0}


def test_unique_products_index_back(graph):
    sampler = RelationPairSampler(graph, batch_size=3, num_hard_negatives=2)
    for b in sampler:
        assert b.products.unique().numel() == b.products.numel()  # no duplicates
        assert torch.equal(b.products[b.src_local], b.src)
        assert torch.equal(b.products[b.dst_local], b.dst)
        has = b.hard_neg >= 0
        assert torch.equal(b.products[b.hard_neg_local[has]], b.hard_neg[has])
        assert (b.hard_neg_local[~has] == -1).all()
        # exactly the referenced products
        referenced = set(b.src.tolist()) | set(b.dst.tolist()) | set(b.hard_neg[has].tolist())
        assert set(b.products.tolist()) == referenced


def batches_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


def test_seeded_determinism():
    data, _ = random_graph(5)
    run = lambda seed: list(RelationPairSampler(data, batch_size=4, seed=seed, num_hard_negatives=2))
    a, b, c = run(7), run(7), run(8)
    assert len(a) == len(b) and all(batches_equal(x, y) for x, y in zip(a, b))
    assert not all(batches_equal(x, y) for x, y in zip(a, c))
    sampler = RelationPairSampler(data, batch_size=4, seed=7, num_hard_negatives=2)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert not all(batches_equal(x, y) for x, y in zip(a, epoch1))
    sampler.set_epoch(1)
    assert all(batches_equal(x, y) for x, y in zip(epoch1, sampler))


def test_state_dict_resume_gives_identical_remaining_batches():
    data, _ = random_graph(6)
    make = lambda: RelationPairSampler(data, batch_size=4, seed=3, num_hard_negatives=1)
    full = make()
    full.set_epoch(2)
    reference = list(full)
    interrupted = make()
    interrupted.set_epoch(2)
    it = iter(interrupted)
    for _ in range(3):
        next(it)
    state = interrupted.state_dict()
    assert state == {"seed": 3, "epoch": 2, "batch": 3}
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(reference) - 3
    assert all(batches_equal(x, y) for x, y in zip(rest, reference[3:]))
    assert resumed.state_dict() == {"seed": 3, "epoch": 3, "batch": 0}


def test_relation_kinds_filter(graph):
    sampler = RelationPairSampler(graph, batch_size=4, relation_kinds=["also_viewed"])
    assert set(positive_triples(list(sampler))) == {(0, 3, 3), (3, 0, 3), (4, 6, 3), (6, 4, 3)}


def test_bad_arguments_raise(graph):
    with pytest.raises(ValueError, match="also_boght"):
        RelationPairSampler(graph, batch_size=2, relation_kinds=["also_boght"])
    with pytest.raises(ValueError, match="batch_size=0"):
        RelationPairSampler(graph, batch_size=0)
    with pytest.raises(ValueError, match="relation_negative_fraction"):
        RelationPairSampler(graph, batch_size=2, relation_negative_fraction=1.5)
    with pytest.raises(ValueError, match="false_negative_scope='all'; accepted: description, any_link"):
        RelationPairSampler(graph, batch_size=2, false_negative_scope="all")
    with pytest.raises(ValueError, match="relation_negative_fraction=0.5 with false_negative_scope='any_link'"):
        RelationPairSampler(graph, batch_size=2, false_negative_scope="any_link")
    del graph[edge_type("also_bought")].split
    with pytest.raises(ValueError, match="split"):
        RelationPairSampler(graph, batch_size=2)
    sampler = RelationPairSampler(make_graph(EDGES, 7, CATEGORY, DESC_KIND), batch_size=2, seed=1)
    with pytest.raises(ValueError, match="seed"):
        sampler.load_state_dict({"seed": 2, "epoch": 0, "batch": 0})


def test_graph_without_categories_uses_relation_negatives_only(graph):
    del graph["product"].category_id
    sampler = RelationPairSampler(graph, batch_size=3, relation_negative_fraction=0.0,
                                  rejection_rounds=16)
    neg = hard_negatives_by_pair(sampler)
    # no category: every column falls back to the relation-specific kind
    assert neg[(0, 1, 1)] == ([3], [RELATION_SPECIFIC])
    assert neg[(3, 0, 3)] == ([NO_NEGATIVE], [NO_NEGATIVE])


@pytest.mark.parametrize("seed", [0, 1])
def test_explicit_negatives_never_linked_under_the_pair_relation(seed):
    from rcml_graph.training.step import explicit_negatives

    data, triples = random_graph(seed)
    sampler = RelationPairSampler(data, batch_size=6, positives_per_anchor=3, num_hard_negatives=2, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    checked = dropped = 0
    for batch in sampler:
        negatives = explicit_negatives(batch, random_negatives=8, generator=generator)
        assert negatives.shape == (batch.num_pairs, 2 + 8)
        assert torch.equal(negatives[:, :2], batch.hard_neg_local)  # the sampler's hard negatives first
        for i in range(batch.num_pairs):
            src, desc = int(batch.src[i]), int(batch.desc_id[i])
            for local in negatives[i, 2:].tolist():
                if local < 0:
                    dropped += 1
                    continue
                product = int(batch.products[local])
                checked += 1
                assert product != src
                assert (src, product, desc) not in triples  # never linked under the pair's relation
                if desc == 0:  # self pair: only the product itself would be linked
                    assert product != int(batch.dst[i])
    assert checked > 100 and dropped > 0  # draws were made, and some were rejected
    assert torch.equal(explicit_negatives(batch, random_negatives=0), batch.hard_neg_local)


def test_expand_segments_int32_and_empty_segments():
    # leading, middle and trailing empty segments; int32 in gives int32 out
    start = torch.tensor([7, 5, 0, 9, 4], dtype=torch.int32)
    length = torch.tensor([0, 2, 0, 3, 0], dtype=torch.int32)
    row, pos = expand_segments(start, length)
    assert row.dtype == pos.dtype == torch.int32
    assert row.tolist() == [1, 1, 3, 3, 3]
    assert pos.tolist() == [5, 6, 9, 10, 11]
    row, pos = expand_segments(torch.tensor([3, 4]), torch.tensor([0, 0]))
    assert row.numel() == pos.numel() == 0


def test_gather_rows_matches_index_select():
    from rcml_graph.sampling.ops import gather_rows

    index = torch.tensor([2, 0, 2], dtype=torch.int32)
    for table in (torch.arange(12, dtype=torch.int32).view(3, 4),  # 16-byte rows
                  torch.arange(6, dtype=torch.int32).view(3, 2),  # 8-byte rows
                  torch.arange(9).view(3, 3)):  # the plain path
        assert torch.equal(gather_rows(table, index), table[index.long()])
    assert gather_rows(torch.arange(12, dtype=torch.int32).view(3, 4), index)[0].tolist() == [8, 9, 10, 11]


def test_batch_product_table_known_answer_and_range_reset():
    from rcml_graph.sampling.products import BatchProductTable

    table = BatchProductTable(10, max_references=8, index_dtype=torch.int32, device=torch.device("cpu"))
    products, local = table.index(torch.tensor([4, 7, 4, 2, 7], dtype=torch.int32))
    assert products.tolist() == [4, 7, 2] and products.dtype == torch.long
    assert local.tolist() == [0, 1, 0, 2, 1]
    present, where = table.lookup(torch.tensor([2, 3, 4, 9], dtype=torch.int32))
    assert present.tolist() == [True, False, True, False]
    assert where[present].tolist() == [2, 0]
    # the next batch ignores what the previous one left in the table
    products, local = table.index(torch.tensor([3, 2], dtype=torch.int32))
    assert products.tolist() == [3, 2] and local.tolist() == [0, 1]
    assert table.lookup(torch.tensor([4, 7, 2], dtype=torch.int32))[0].tolist() == [False, False, True]
    # exhaust the value range: the table starts afresh and gives the same answers
    table._offset = 1
    products, local = table.index(torch.tensor([5, 5, 1], dtype=torch.int32))
    assert products.tolist() == [5, 1] and local.tolist() == [0, 0, 1]
    assert table.lookup(torch.tensor([3, 1], dtype=torch.int32))[0].tolist() == [False, True]


@pytest.mark.parametrize("num_hard_negatives,include_self_pairs", [(1, True), (3, True), (2, False), (0, True)])
def test_int32_and_int64_index_paths_give_identical_batches(num_hard_negatives, include_self_pairs):
    data, _ = random_graph(4)
    make = lambda dtype: RelationPairSampler(
        data, batch_size=5, positives_per_anchor=3, num_hard_negatives=num_hard_negatives,
        include_self_pairs=include_self_pairs, seed=2, index_dtype=dtype)
    narrow, wide = make(None), make(torch.long)
    assert narrow.index_dtype == torch.int32 and wide.index_dtype == torch.long
    assert narrow.edge_info.dtype == torch.int32 and wide.edge_info.dtype == torch.long
    batches = list(narrow)
    assert len(batches) == len(wide) > 3
    for a, b in zip(batches, wide):
        assert batches_equal(a, b)
        for name in ("src", "dst", "desc_id", "hard_neg", "products", "src_local", "dst_local",
                     "hard_neg_local", "false_negative_index"):
            assert getattr(a, name).dtype == torch.long  # the batch holds int64 either way


def test_bad_index_dtype_raises(graph):
    with pytest.raises(ValueError, match="index_dtype"):
        RelationPairSampler(graph, batch_size=2, index_dtype=torch.float32)


@pytest.mark.parametrize("prefetch,workers", [(1, 1), (3, 1), (1, 3), (4, 2)])
def test_prefetch_gives_the_same_batches_and_resume_position(prefetch, workers):
    data, _ = random_graph(5)
    plain = RelationPairSampler(data, batch_size=4, num_hard_negatives=2, seed=3)
    ahead = RelationPairSampler(data, batch_size=4, num_hard_negatives=2, seed=3)
    ahead.prefetch, ahead.prefetch_workers = prefetch, workers
    for epoch in range(2):
        a, b = list(plain), list(ahead)
        assert len(a) == len(b) == len(plain) and all(batches_equal(x, y) for x, y in zip(a, b))
        assert plain.state_dict() == ahead.state_dict() == {"seed": 3, "epoch": epoch + 1, "batch": 0}
    # stopping part-way (a kill, max_steps) leaves the position of the batches handed out
    iterator = iter(ahead)
    taken = [next(iterator) for _ in range(2)]
    iterator.close()
    assert ahead.state_dict() == {"seed": 3, "epoch": 2, "batch": 2}
    resumed = RelationPairSampler(data, batch_size=4, num_hard_negatives=2, seed=3)
    resumed.load_state_dict(ahead.state_dict())
    rest = list(resumed)
    assert all(batches_equal(x, plain.batch_at(2, i)) for i, x in enumerate(taken + rest))


def test_bad_prefetch_workers_is_named(graph):
    sampler = RelationPairSampler(graph, batch_size=2)
    sampler.prefetch, sampler.prefetch_workers = 1, 0
    with pytest.raises(ValueError, match="prefetch_workers=0"):
        next(iter(sampler))


def test_each_thread_gets_its_own_product_table(graph):
    sampler = RelationPairSampler(graph, batch_size=2)
    seen = {}

    def grab(name):
        seen[name] = (sampler._product_table(), sampler._product_table())

    threads = [threading.Thread(target=grab, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sampler._product_table() is sampler._products
    assert seen["a"][0] is seen["a"][1]  # built once per thread
    tables = {id(sampler._products), id(seen["a"][0]), id(seen["b"][0])}
    assert len(tables) == 3


def test_sampler_pickles_and_the_copy_gives_the_same_batches():
    data, _ = random_graph(6)
    sampler = RelationPairSampler(data, batch_size=4, num_hard_negatives=2, seed=5)
    copy = pickle.loads(pickle.dumps(sampler))
    assert len(copy) == len(sampler) > 2
    assert all(batches_equal(copy.batch_at(1, i), sampler.batch_at(1, i))
               for i in range(len(sampler)))
    assert copy._product_table() is copy._products


@pytest.mark.parametrize("dtype", [torch.int32, torch.long, torch.float32, torch.bool])
def test_huge_page_copy_keeps_values_and_falls_back(dtype):
    table = (torch.arange(3 * 70_001) % 7).to(dtype).view(-1, 3)
    copied = huge_page_copy(table, min_bytes=0)
    assert copied.dtype == table.dtype and copied.shape == table.shape
    assert torch.equal(copied, table)
    if hasattr(mmap, "MADV_HUGEPAGE") and sys.platform.startswith("linux"):
        assert copied.data_ptr() != table.data_ptr()
        assert copied.data_ptr() % HUGE_PAGE_BYTES == 0  # starts on a huge-page boundary
    del table
    copied.view(-1)[0] = copied.view(-1)[1]  # writable, and alive without the original
    assert bool((copied.view(-1)[:2] == copied.view(-1)[1]).all())
    small = torch.ones(10, dtype=dtype)
    assert huge_page_copy(small) is small  # below one huge page: unchanged
    strided = torch.ones(4, 6)[:, ::2]
    assert huge_page_copy(strided, min_bytes=0) is strided  # not contiguous: unchanged
