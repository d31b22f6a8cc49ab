"""Train/val/test splits of relation edges: seeded, leakage-free.

An edge and its reverse always share a split (the split is drawn per unordered pair, so
``u -> v`` and ``v -> u`` of a directed kind land together as well).
"""

from __future__ import annotations

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")


def check_ratios(val_ratio: float, test_ratio: float) -> None:
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise ValueError(
            f"split ratios val={val_ratio}, test={test_ratio} are invalid; each must be in [0, 1) "
            "and their sum below 1"
        )


def pair_keys(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """``(E,)`` key of each edge's unordered pair: ``min * num_nodes + max``."""
    return np.minimum(*edge_index) * num_nodes + np.maximum(*edge_index)


def transductive_edge_split(
    edge_index: np.ndarray, num_nodes: int, val_ratio: float, test_ratio: float, seed: int
) -> np.ndarray:
    """Split ``(2, E)`` edges by unordered pair; returns ``(E,)`` uint8 of TRAIN/VAL/TEST."""
    check_ratios(val_ratio, test_ratio)
    pair_key = pair_keys(edge_index, num_nodes)
    if np.all(pair_key[1:] > pair_key[:-1]):
        # Already sorted and unique (canonical undirected edges): skip np.unique's argsort.
        num_pairs, inverse = pair_key.size, None
    else:
        unique_pairs, inverse = np.unique(pair_key, return_inverse=True)
        num_pairs = unique_pairs.size
    order = np.random.default_rng(seed).permutation(num_pairs)
    num_test = int(round(test_ratio * num_pairs))
    num_val = int(round(val_ratio * num_pairs))
    pair_split = np.full(num_pairs, TRAIN, dtype=np.uint8)
    pair_split[order[:num_test]] = TEST
    pair_split[order[num_test : num_test + num_val]] = VAL
    return pair_split if inverse is None else pair_split[inverse]


def inductive_node_split(
    num_nodes: int, val_ratio: float, test_ratio: float, seed: int
) -> np.ndarray:
    """Hold out products: ``(N,)`` uint8 of TRAIN/VAL/TEST per product."""
    check_ratios(val_ratio, test_ratio)
    order = np.random.default_rng(seed).permutation(num_nodes)
    num_test = int(round(test_ratio * num_nodes))
    num_val = int(round(val_ratio * num_nodes))
    node_split = np.full(num_nodes, TRAIN, dtype=np.uint8)
    node_split[order[:num_test]] = TEST
    node_split[order[num_test : num_test + num_val]] = VAL
    return node_split


def inductive_edge_split(edge_index: np.ndarray, node_split: np.ndarray) -> np.ndarray:
    """An edge touching a held-out product goes to that product's split (test wins over val)."""
    return np.maximum(node_split[edge_index[0]], node_split[edge_index[1]]).astype(np.uint8)
