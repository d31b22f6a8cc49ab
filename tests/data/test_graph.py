import numpy as np
import pytest
import torch

from rcml_graph.data.amazon import RawProduct
from rcml_graph.data.graph import GraphSettings, build_graph
from rcml_graph.data.products import collect_products
from rcml_graph.data.splits import TEST, TRAIN, VAL
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type


def _world(num_per_group: int = 6) -> list[RawProduct]:
    """Two interests (fishing, baby feeding) of cliques, and a bridge product in both."""
    groups = {
        "fish": [("Fishing Reels", "spinning reel"), ("Fishing Rods", "carbon rod"), ("Waders", "chest waders")],
        "baby": [("Baby Bottles", "glass bottle"), ("Nursing Pillows", "nursing pillow"), ("Sterilizers", "steam sterilizer")],
    }
    products = []
    ids = {g: [f"{g}{i}" for i in range(num_per_group)] for g in groups}
    for g, cats in groups.items():
        for i, pid in enumerate(ids[g]):
            cat, noun = cats[i % len(cats)]
            products.append(RawProduct(
                product_id=pid, title=f"{noun} {i}", category_path=["Shop", cat],
                relations={"also_bought": [p for p in ids[g] if p != pid] + ["bridge"],
                           "also_viewed": [ids[g][(i + 1) % num_per_group]]},
            ))
    products.append(RawProduct(product_id="bridge", title="insulated bottle", category_path=["Shop", "Bottles"],
                               relations={"also_bought": ids["fish"] + ids["baby"]}))
    return products


def test_graph_layout_and_descriptions():
    data, report = build_graph(collect_products(_world()), GraphSettings(min_community_size=3, community_resolution=1.0))
    assert data["product"].num_nodes == 13
    assert data.relation_text[0] == SELF_RELATION_TEXT
    assert int(data.relation_kind_of_desc[0]) == -1
    fwd, rev = data[edge_type("also_bought")], data[reverse_edge_type("also_bought")]
    assert torch.equal(fwd.edge_index.flip(0), rev.edge_index)
    assert torch.equal(fwd.desc_id, rev.desc_id) and torch.equal(fwd.split, rev.split)
    # Symmetric kind: stored once per unordered pair (15 + 15 within groups + 12 to the bridge).
    assert fwd.edge_index.shape[1] == 42
    assert bool((fwd.edge_index[0] < fwd.edge_index[1]).all())
    # Two interest communities: edges inside each get that community's description, and the
    # bridge's edges get the description of the (lower-degree) group product's community.
    texts = [data.relation_text[int(d)] for d in fwd.desc_id]
    assert len(set(texts)) == 2
    assert all(t.startswith("also bought by people who like ") for t in texts)
    pid = data["product"].product_id
    src, dst = fwd.edge_index
    fish_desc = {t for s, d, t in zip(src.tolist(), dst.tolist(), texts) if "fish" in pid[s] + pid[d]}
    baby_desc = {t for s, d, t in zip(src.tolist(), dst.tolist(), texts) if "baby" in pid[s] + pid[d]}
    assert len(fish_desc) == 1 and len(baby_desc) == 1 and fish_desc != baby_desc
    # Category/brand nodes and edges.
    assert data["category"].num_nodes == 7
    assert data["product", "in_category", "category"].edge_index.shape == (2, 13)
    communities = report["communities"]["co_purchase"]
    assert communities["count"] == 2
    assert sorted(c["size"] for c in communities["communities"]) == [6, 7]
    assert report["descriptions"]["per_relation"]["also_bought"]["specific_context_share"] == 1.0


def test_descriptions_are_deterministic():
    first, _ = build_graph(collect_products(_world()), GraphSettings(seed=3))
    second, _ = build_graph(collect_products(_world()), GraphSettings(seed=3))
    assert first.relation_text == second.relation_text
    for kind in ("also_bought", "also_viewed"):
        assert torch.equal(first[edge_type(kind)].desc_id, second[edge_type(kind)].desc_id)
        assert torch.equal(first[edge_type(kind)].split, second[edge_type(kind)].split)


def _random_table(num_products=300, num_edges=3000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, num_products, num_edges)
    dst = rng.integers(0, num_products, num_edges)
    records = [RawProduct(product_id=f"p{i}", title=f"product {i}", category_path=["c", f"leaf{i % 7}"])
               for i in range(num_products)]
    for s, d in zip(src, dst):
        records[s].relations.setdefault("also_bought", []).append(f"p{d}")
        records[s].relations.setdefault("buy_after_viewing", []).append(f"p{d}")
    return collect_products(records)


def test_transductive_split_has_no_leakage():
    data, report = build_graph(_random_table(), GraphSettings(val_ratio=0.1, test_ratio=0.2, seed=1))
    for kind in ("also_bought", "buy_after_viewing"):
        store = data[edge_type(kind)]
        ei, split = store.edge_index, store.split
        pair = torch.minimum(ei[0], ei[1]) * 10_000 + torch.maximum(ei[0], ei[1])
        train_pairs = set(pair[split == TRAIN].tolist())
        held_out = set(pair[split != TRAIN].tolist())
        assert not train_pairs & held_out  # u->v and v->u always share a split
        counts = report["splits"]["per_relation"][kind]
        total = sum(counts.values())
        assert counts["test"] / total == pytest.approx(0.2, abs=0.03)
        assert counts["val"] / total == pytest.approx(0.1, abs=0.03)
    # buy_after_viewing is directed: both directions of a pair can exist, and share a split.
    bav = data[edge_type("buy_after_viewing")]
    assert bool((bav.edge_index[0] > bav.edge_index[1]).any())


def test_inductive_split_holds_out_products():
    data, _ = build_graph(_random_table(), GraphSettings(split="inductive", val_ratio=0.1, test_ratio=0.1))
    node_split = data["product"].split
    store = data[edge_type("also_bought")]
    src, dst = store.edge_index
    train = store.split == TRAIN
    assert bool((node_split[src[train]] == TRAIN).all() and (node_split[dst[train]] == TRAIN).all())
    touches_test = (node_split[src] == TEST) | (node_split[dst] == TEST)
    assert bool((store.split[touches_test] == TEST).all())
    assert int((node_split == VAL).sum()) == 30


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown split 'random'"):
        GraphSettings(split="random")
    with pytest.raises(ValueError, match="val=0.6, test=0.5"):
        build_graph(_random_table(30, 50), GraphSettings(val_ratio=0.6, test_ratio=0.5))


def test_transductive_split_of_sorted_pairs_equals_the_general_path():
    from rcml_graph.data.splits import transductive_edge_split

    rng = np.random.default_rng(0)
    num_nodes = 50
    pairs = np.unique(np.sort(rng.integers(0, num_nodes, (2, 400)), axis=0), axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]  # canonical: sorted, unique, lo < hi
    fast = transductive_edge_split(pairs, num_nodes, 0.1, 0.2, seed=3)
    # Reversed and shuffled, the same pairs take np.unique's path and the same split.
    order = rng.permutation(pairs.shape[1])
    general = transductive_edge_split(pairs[::-1, order], num_nodes, 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(general, fast[order])
    assert np.bincount(fast, minlength=3).tolist() == [
        pairs.shape[1] - round(0.1 * pairs.shape[1]) - round(0.2 * pairs.shape[1]),
        round(0.1 * pairs.shape[1]),
        round(0.2 * pairs.shape[1]),
    ]


def test_community_report_sizes_purity_and_top_category():
    from rcml_graph.data.communities import Communities
    from rcml_graph.data.graph import _community_report

    # Community 0: products 0-3 with categories a, a, b, none -> purity 2/4, top "a".
    # Community 1: products 4-5 with b, a -> a tie, the smaller category id ("a") wins.
    # Community 2: product 6 without a category. Product 7 is in no community.
    label = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    category_id = np.array([0, 0, 1, -1, 1, 0, -1, 1])
    communities = Communities(label, ["n0", "n1", "n2"], [["t0"], ["t1"], []], "label-propagation")
    report = _community_report(communities, category_id, ["a", "b"])
    rows = report["communities"]
    assert [r["size"] for r in rows] == [4, 2, 1]
    assert [r["category_purity"] for r in rows] == [0.5, 0.5, 0.0]
    assert [r["top_category"] for r in rows] == ["a", "a", ""]
    assert rows[0]["name"] == "n0" and rows[0]["top_terms"] == ["t0"]
    assert report["count"] == 3 and report["products_in_a_community"] == 7
    assert report["size_max"] == 4 and report["size_median"] == 2.0
    assert report["mean_category_purity"] == (0.5 + 0.5 + 0.0) / 3


def test_community_edge_subset_drops_held_out_pairs_of_every_kind():
    from rcml_graph.data.graph import community_edge_subset

    edges = {
        "also_bought": np.array([[0, 1, 2, 3], [1, 2, 3, 4]]),
        "also_viewed": np.array([[2, 5], [1, 6]]),  # (2, 1) is the pair (1, 2), reversed
    }
    splits = {
        "also_bought": np.array([TRAIN, TRAIN, VAL, TRAIN], dtype=np.uint8),
        "also_viewed": np.array([TEST, TRAIN], dtype=np.uint8),
    }
    subset = community_edge_subset(edges, splits, num_nodes=7)
    # (1, 2) is training in also_bought but held out in also_viewed; (2, 3) is validation.
    assert subset["also_bought"].tolist() == [[0, 3], [1, 4]]
    assert subset["also_viewed"].tolist() == [[5], [6]]


def _spy_world(with_held_out: bool) -> list[RawProduct]:
    """`_world` plus a fishing product linked to one fishing product by a training edge and,
    if ``with_held_out``, to every baby product by edges the split will hold out."""
    products = _world()
    baby = [p.product_id for p in products if p.product_id.startswith("baby")]
    products.append(RawProduct(
        product_id="spy", title="spinning reel deluxe", category_path=["Shop", "Fishing Reels"],
        relations={"also_bought": ["fish0"] + (baby if with_held_out else [])},
    ))
    return products


@pytest.mark.parametrize("community_edges", ["train", "all"])
def test_held_out_edges_shape_no_community_or_description(monkeypatch, community_edges):
    import rcml_graph.data.graph as graph_module

    def build(with_held_out: bool):
        table = collect_products(_spy_world(with_held_out))
        index = {pid: i for i, pid in enumerate(table.product_id)}
        spy, baby = index["spy"], {i for pid, i in index.items() if pid.startswith("baby")}

        def split(edge_index, num_nodes, val_ratio, test_ratio, seed):
            # Every spy-baby edge is a test edge, everything else trains.
            src, dst = edge_index
            return np.array(
                [TEST if {s, d} & {spy} and {s, d} & baby else TRAIN for s, d in zip(src.tolist(), dst.tolist())],
                dtype=np.uint8,
            )

        monkeypatch.setattr(graph_module, "transductive_edge_split", split)
        settings = GraphSettings(min_community_size=3, community_resolution=1.0, community_edges=community_edges)
        data, report = build_graph(table, settings)
        return data, report, table.product_id

    without, _, ids_without = build(False)
    with_held, report, ids_with = build(True)
    assert report["community_edges"] == community_edges
    assert ids_without == ids_with
    spy = ids_with.index("spy")
    baby_community = int(with_held["product"].community[ids_with.index("baby0")])
    held_out = with_held[edge_type("also_bought")].split == TEST
    assert int(held_out.sum()) == 6
    if community_edges == "all":
        # The leak this option closes: six test edges pull the spy into the baby community.
        assert int(with_held["product"].community[spy]) == baby_community
        return
    assert torch.equal(without["product"].community, with_held["product"].community)
    assert int(with_held["product"].community[spy]) != baby_community
    # Every edge present in both graphs carries the same description text.
    def described(data):
        store = data[edge_type("also_bought")]
        return {
            (s, d): data.relation_text[t]
            for s, d, t in zip(*store.edge_index.tolist(), store.desc_id.tolist())
        }

    shared = described(without)
    assert shared.items() <= described(with_held).items()
    assert report["communities"]["co_purchase"]["edges_used"] == len(shared)
