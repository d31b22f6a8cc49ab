"""The negatives ``pair_loss`` leaves in: never a copy of a positive or of the anchor itself.

A view key names what a head embeds: ``(product, relation)`` for a relation-conditioned view, the
product alone for a relation-free one (a global-only head's, and the ``w_global`` term's of a
conditioned head), which is the same vector under every relation. Candidate ``j`` of row ``i``
(the pair ``(s_i, t_j)``) must be left out when it repeats a positive pair (``s_i = s_j`` or
``t_i = t_j`` as views) or when ``t_j`` is ``s_i``'s own view.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rcml_graph.losses import RCMLLoss, false_negative_mask
from rcml_graph.sampling import RelationPairSampler
from rcml_graph.training import pair_loss
from tests.test_sampler import random_graph

E = 8


def _stub_model(batch):
    """A head whose outputs only need the right shapes: the recorder below ignores them."""
    def model(features, src_local, dst_local, desc, table, negatives, with_global):
        p = src_local.numel()
        z = torch.nn.functional.normalize(torch.randn(p, E), dim=1)
        out = dict(src_image=z, src_text=z, dst_image=z, dst_text=z, logit_scale=torch.tensor(10.0),
                   src_image_valid=torch.ones(p, dtype=torch.bool), dst_image_valid=torch.ones(p, dtype=torch.bool),
                   neg_image=None, neg_text=None, neg_image_valid=None, neg_valid=None,
                   global_src_image=z, global_src_text=z, global_dst_image=z, global_dst_text=z)
        return SimpleNamespace(**out)
    return model


class _Recorder(RCMLLoss):
    """Records the effective false-negative mask of every call (as :class:`RCMLLoss` builds it)."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[torch.Tensor] = []

    def forward(self, *args, **kwargs):
        src_key, dst_key, fn = args[5], args[6], args[9]
        mask = false_negative_mask(src_key, dst_key)
        if fn is not None:
            mask = mask | fn
        if kwargs.get("relation_ids") is not None:
            r = kwargs["relation_ids"]
            mask = mask | (r[:, None] != r[None, :])
        self.masks.append(mask)
        return super().forward(*args, **kwargs)


def _must_be_masked(batch, relation_free: bool) -> torch.Tensor:
    """(P, P): (s_i, t_j) repeats a positive pair or puts s_i against its own view."""
    if relation_free:
        s, t = batch.src, batch.dst
    else:
        s, t = batch.src * 1000 + batch.desc_id, batch.dst * 1000 + batch.desc_id
    must = (s[:, None] == s[None, :]) | (t[:, None] == t[None, :]) | (s[:, None] == t[None, :])
    return must & ~torch.eye(batch.num_pairs, dtype=torch.bool)


@pytest.mark.parametrize("conditioned", [False, True])
def test_no_negative_repeats_a_positive_or_the_anchor(conditioned):
    data, _ = random_graph(3, num_products=30, num_edges=160)
    sampler = RelationPairSampler(data, batch_size=16, positives_per_anchor=4, seed=0)
    num_relations = len(data.relation_text)
    cases = {"self": 0, "reverse": 0}
    for batch in sampler:
        recorder = _Recorder()
        pair_loss(_stub_model(batch), recorder, batch, None, None, num_relations, conditioned=conditioned,
                  w_global=1.0, features=object())
        # conditioned: the relation term, then the relation-free w_global term; else one term
        expected = [False, True] if conditioned else [True]
        assert len(recorder.masks) == len(expected)
        for mask, relation_free in zip(recorder.masks, expected):
            must = _must_be_masked(batch, relation_free)
            missing = must & ~mask
            assert not missing.any(), (relation_free, missing.nonzero()[:5].tolist())
        # the cases this is about occur (the test is not vacuous): an anchor's self pair beside
        # its relation pairs, and, keyed by relation, an edge with its reverse
        own = (batch.src[:, None] == batch.dst[None, :]) & (batch.desc_id[:, None] != batch.desc_id[None, :])
        cases["self"] += int(own.sum())
        rev = ((batch.src[:, None] == batch.dst[None, :]) & (batch.dst[:, None] == batch.src[None, :])
               & (batch.desc_id[:, None] == batch.desc_id[None, :]) & ~batch.is_self[:, None])
        cases["reverse"] += int(rev.sum())
    assert cases["self"] > 0 and cases["reverse"] > 0, cases


def test_global_only_loss_is_zero_with_perfect_embeddings():
    # Pairs (A -> B under relation 1) and A's self pair (A -> A under 0). A global-only head with
    # A's and B's image and text all equal to one unit vector u, C's to an orthogonal one:
    # every in-batch candidate that is left in is orthogonal, so the loss is ~0. Keyed by
    # relation, A's self pair put A's own view (= u) among the negatives of the pair A -> B.
    u, v = torch.eye(2)
    a = torch.stack([u, u, v])  # pairs: (A, B, 1), (A, A, 0), (C, C, 0)
    src = torch.tensor([0, 0, 2])
    dst = torch.tensor([1, 0, 2])
    desc = torch.tensor([1, 0, 0])
    from rcml_graph.losses import view_keys

    loss_fn = RCMLLoss()
    product_keyed, _ = loss_fn(a, a, a, a, 100.0, view_keys(src, torch.zeros_like(desc), 2),
                               view_keys(dst, torch.zeros_like(desc), 2))
    relation_keyed, _ = loss_fn(a, a, a, a, 100.0, view_keys(src, desc, 2), view_keys(dst, desc, 2))
    assert product_keyed.item() < 1e-6
    assert relation_keyed.item() > 0.3  # log 2 on the rows that met their copy


def test_ddp_shard_gets_the_global_batchs_graph_mask(monkeypatch):
    # Under DDP (world size 2) rank 0 trains the first half of the pairs; the loss gathers both
    # halves, so the graph mask it gets must be the whole batch's, entries between ranks included
    # (before: each rank's diagonal block, and the loss put the blocks on a block diagonal).
    import rcml_graph.training.step as step
    from rcml_graph.sampling import false_negative_mask as graph_mask

    data, _ = random_graph(3, num_products=30, num_edges=160)
    batch = next(iter(RelationPairSampler(data, batch_size=16, positives_per_anchor=4, seed=0)))
    half = batch.num_pairs // 2
    seen = {}

    class Capture(RCMLLoss):
        def forward(self, *args, **kwargs):
            seen["mask"], seen["global"] = args[9], kwargs.get("global_false_negatives")
            return torch.zeros(()), {}

    monkeypatch.setattr(step, "world_size", lambda: 2)
    pair_loss(_stub_model(batch), Capture(), batch, None, None, len(data.relation_text),
              pairs=slice(0, half), features=object())
    full = graph_mask(batch)[: 2 * half, : 2 * half]
    assert seen["global"] is True and torch.equal(seen["mask"], full)
    assert full[:half, half:].any()  # there are entries between the ranks to keep
