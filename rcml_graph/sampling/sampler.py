"""Relation-aware pair sampler: positives, intra-sample pairs, hard negatives, false-negative masks.

The sampler turns the training edges of a product graph (see :mod:`rcml_graph.relations` for
the edge types) into batches of ``(anchor, target, relation description)`` pairs for
relation-conditioned contrastive training.

Training pairs
    Every train-split edge (``split == 0``) of each selected forward relation type is one
    directed pair ``(src, dst, desc_id)``. Relations other than ``directed_kinds`` (default:
    ``buy_after_viewing``) are symmetric, so their edges are also used flipped,
    ``(dst, src, desc_id)``, as a pair of its own: both ends get to be the anchor. A
    ``buy_after_viewing`` edge is used only in its stored direction, because its description
    reads one way. Duplicate triples and self-loops are dropped, so an epoch shows every
    distinct directed training triple exactly once.

Epochs and batches
    The pairs are stored as a CSR over anchors, sorted by (anchor, description, target). An
    anchor's ``deg`` pairs are cut into ``ceil(deg / K)`` *slots* of at most ``K`` pairs each
    (``K = positives_per_anchor``); slot ``c`` takes the anchor's pairs ``c, c + n, c + 2n, ...``
    (``n`` = its number of slots) after a per-epoch random rotation, so a slot mixes
    descriptions rather than taking a run of one. An epoch is a seeded permutation of all
    slots; batch ``b`` takes slots ``[b * batch_size, (b + 1) * batch_size)``. Hence an epoch
    sees each training pair exactly once, an anchor brings up to ``K`` positives (many-to-many:
    several relations and targets per anchor) and building an epoch costs one ``randperm`` of
    the slots, not a sort of the edges. With ``include_self_pairs`` every slot adds the
    intra-sample pair ``(anchor, anchor, 0)`` (own image <-> own text, description 0 =
    :data:`~rcml_graph.relations.SELF_RELATION_TEXT`).

Hard negatives (per pair, ``num_hard_negatives`` columns; see :mod:`.negatives`)
    *same category*: a random product of the anchor's leaf category; *relation-specific*: a
    random neighbour of the anchor under a different description (the positive's own
    description group is cut out of the draw). A candidate is rejected when it is the anchor
    or is linked to the anchor under the positive's description; rejected columns are redrawn
    for up to ``rejection_rounds`` rounds per kind. Each column prefers the relation-specific
    kind with probability ``relation_negative_fraction`` and falls back to the other kind,
    else ``-1``.

False negatives
    Pair ``i`` must not use product ``v`` as a negative when ``v`` is linked to its anchor
    under its description in the training graph (the self relation links a product only to
    itself). The batch lists these as ``(pair, local product)`` coordinates, found by
    enumerating each pair's (anchor, description) group, contiguous in the CSR, and looking
    its members up in the batch's product table: ``O(sum of group sizes)`` per batch instead
    of ``P^2`` membership tests. :func:`~rcml_graph.sampling.false_negative_mask` turns them
    into the dense (P, P) mask. Only train edges count, so validation and test links are not
    leaked into training. With ``false_negative_scope="any_link"`` every product linked to the
    anchor in either direction (any description of the sampler's relation kinds, directed kinds
    included both ways) is enumerated instead, from a symmetric link CSR: no such product is
    ever a negative, the masking a relation-free (symmetric) baseline needs so that it is not
    asked to rank one linked product below another. Hard-negative draws are still rejected
    against the pair's own description group only, so a few same-category draws end up masked.

Determinism
    Batch ``b`` of epoch ``e`` is a pure function of ``(seed, e, b)`` on a given device type,
    so :meth:`RelationPairSampler.state_dict` need only hold ``(epoch, batch)``. A sampler
    keeps a product-sized scratch table, so one instance must not serve two threads at once
    (DataLoader worker processes each get their own copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import threading

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.utils import to_undirected

from rcml_graph.relations import PRODUCT, RELATION_KINDS, check_kind, edge_type
from rcml_graph.sampling.batch import PairBatch
from rcml_graph.sampling.cursor import EpochCursor
from rcml_graph.sampling.negatives import PairContext, draw_hard_negatives
from rcml_graph.sampling.ops import expand_segments, gather_rows, huge_page_copy, mix_seed
from rcml_graph.sampling.products import BatchProductTable

#: Split code of training edges.
TRAIN_SPLIT: Final = 0

_INDEX_DTYPES: Final = (torch.int32, torch.long)

#: ``false_negative_scope`` values: products linked to the anchor under the pair's own
#: description, or linked to it at all (any description, either direction).
FALSE_NEGATIVE_SCOPES: Final = ("description", "any_link")


class RelationPairSampler(EpochCursor):
    """Seeded, vectorised sampler of relation-labelled contrastive pairs.

    See the module docstring for the semantics of epochs, slots, hard negatives and the
    false-negative mask.

    Args:
        data: product graph following the graph contract (``data["product"].num_nodes``,
            optional ``data["product"].category_id``, relation edge types with
            ``edge_index``, ``desc_id`` and ``split``, ``data.relation_text``).
        batch_size: anchor slots per batch; a batch has up to ``batch_size * K`` relation
            pairs plus ``batch_size`` self pairs.
        positives_per_anchor: ``K``, the most positives an anchor slot brings (default 4).
        num_hard_negatives: ``H``, hard-negative columns per pair (default 1; 0 for none).
        include_self_pairs: add one intra-sample pair per slot (default True).
        relation_kinds: relation kinds to train on (default: every kind in ``data``).
        split: edge split code to sample from (default 0, train). The false-negative mask
            and the hard-negative filter use the same edges.
        seed: base seed (default 0).
        device: device for the index structures and batches (default CPU).
        directed_kinds: kinds used only in their stored direction (default
            ``("buy_after_viewing",)``).
        relation_negative_fraction: probability that a hard-negative column tries the
            relation-specific kind first (default 0.5).
        rejection_rounds: draws of each kind per hard-negative column before giving up
            (default 3).
        index_dtype: dtype of the internal index arithmetic, ``torch.int32`` or
            ``torch.long`` (default None: int32 where every index fits, which moves half the
            bytes; the batches are the same either way and always hold int64 indices).
    """

    def __init__(
        self,
        data: HeteroData,
        *,
        batch_size: int,
        positives_per_anchor: int = 4,
        num_hard_negatives: int = 1,
        include_self_pairs: bool = True,
        relation_kinds: Sequence[str] | None = None,
        split: int = TRAIN_SPLIT,
        seed: int = 0,
        device: torch.device | str = "cpu",
        directed_kinds: Sequence[str] = ("buy_after_viewing",),
        relation_negative_fraction: float = 0.5,
        rejection_rounds: int = 3,
        index_dtype: torch.dtype | None = None,
        false_negative_scope: str = "description",
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1),
                                 ("positives_per_anchor", positives_per_anchor, 1),
                                 ("num_hard_negatives", num_hard_negatives, 0),
                                 ("rejection_rounds", rejection_rounds, 1)):
            if value < low:
                raise ValueError(f"{name}={value!r}; accepted: an integer >= {low}")
        if not 0.0 <= relation_negative_fraction <= 1.0:
            raise ValueError(f"relation_negative_fraction={relation_negative_fraction!r}; "
                             "accepted: a probability in [0, 1]")
        if false_negative_scope not in FALSE_NEGATIVE_SCOPES:
            raise ValueError(f"false_negative_scope={false_negative_scope!r}; accepted: "
                             f"{', '.join(FALSE_NEGATIVE_SCOPES)}")
        if false_negative_scope == "any_link" and relation_negative_fraction > 0:
            raise ValueError(f"relation_negative_fraction={relation_negative_fraction!r} with "
                             "false_negative_scope='any_link', which masks every product linked to "
                             "the anchor, so each relation-specific hard negative would be masked; "
                             "accepted: relation_negative_fraction=0 with any_link")
        if index_dtype is not None and index_dtype not in _INDEX_DTYPES:
            raise ValueError(f"index_dtype={index_dtype!r}; accepted: None, torch.int32 or "
                             "torch.long")
        for kind in directed_kinds:
            check_kind(kind)
        self.batch_size = batch_size
        self.positives_per_anchor = positives_per_anchor
        self.num_hard_negatives = num_hard_negatives
        self.include_self_pairs = include_self_pairs
        self.relation_negative_fraction = relation_negative_fraction
        self.rejection_rounds = rejection_rounds
        self.false_negative_scope = false_negative_scope
        self.seed = seed
        self.device = torch.device(device)
        self.relation_kinds = self._select_kinds(data, relation_kinds)

        self.num_products = int(data[PRODUCT].num_nodes)
        src, dst, desc = self._collect_pairs(data, split, set(directed_kinds))
        self.num_descriptions = max(len(getattr(data, "relation_text", None) or []),
                                    int(desc.max()) + 1 if desc.numel() else 1)
        # every intermediate index stays below the pool size (category members, sentinel,
        # CSR pairs) plus one degree, so int32 arithmetic cannot overflow under this bound
        largest = max(self.num_products + 1 + 2 * src.numel(), self.num_descriptions)
        fits = largest < 1 << 31
        if index_dtype is None:
            index_dtype = torch.int32 if fits else torch.long
        elif index_dtype == torch.int32 and not fits:
            raise ValueError(f"index_dtype=torch.int32 but indices reach {largest}; accepted: "
                             "None or torch.long for this graph")
        #: dtype of the index structures and the per-batch index arithmetic.
        self.index_dtype = index_dtype
        if false_negative_scope == "any_link":
            self._build_link_csr(src, dst)
        self._build_csr(src, dst, desc)
        self._build_categories(data)
        self._build_slots()
        #: category members then every CSR pair's target: the hard-negative candidate pool.
        self.pool = torch.cat([self.category_members, self._pair_target]).to(index_dtype)
        self.relation_offset = self.category_members.numel()
        del self._pair_target
        self._build_anchor_info()
        # the tables a batch reads at random rows (on CPU, moved into huge pages)
        self.edge_info = huge_page_copy(self.edge_info)
        self.pool = huge_page_copy(self.pool)
        self._slot_table = huge_page_copy(self._slot_table)
        self._anchor_info = huge_page_copy(self._anchor_info)
        max_references = batch_size * (1 + positives_per_anchor) * (1 + num_hard_negatives)
        self._max_references = max_references
        self._products = BatchProductTable(self.num_products, max_references, index_dtype,
                                           self.device)
        self._owner = threading.get_ident()
        self._scratch = threading.local()
        self.epoch = 0
        self._batch = 0
        self._epoch_cache: tuple[int, Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ build
    @staticmethod
    def _select_kinds(data: HeteroData, relation_kinds: Sequence[str] | None) -> tuple[str, ...]:
        present = [kind for kind in RELATION_KINDS if edge_type(kind) in data.edge_types]
        if relation_kinds is None:
            return tuple(present)
        for kind in relation_kinds:
            check_kind(kind)
            if kind not in present:
                raise ValueError(f"relation kind {kind!r} has no edge type in the graph; "
                                 f"present: {', '.join(present) or 'none'}")
        return tuple(relation_kinds)

    def _collect_pairs(self, data: HeteroData, split: int,
                       directed: set[str]) -> tuple[Tensor, Tensor, Tensor]:
        srcs, dsts, descs = [], [], []
        for kind in self.relation_kinds:
            store = data[edge_type(kind)]
            for attr in ("edge_index", "desc_id", "split"):
                if attr not in store:
                    raise ValueError(f"edge type {edge_type(kind)} lacks {attr!r}; "
                                     "accepted: edge_index, desc_id and split per relation")
            keep = store.split.to(torch.long) == split
            edge_index = store.edge_index[:, keep].to(torch.long)
            desc = store.desc_id[keep].to(torch.long)
            srcs.append(edge_index[0])
            dsts.append(edge_index[1])
            descs.append(desc)
            if kind not in directed:
                srcs.append(edge_index[1])
                dsts.append(edge_index[0])
                descs.append(desc)
        cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        src, dst, desc = cat(srcs), cat(dsts), cat(descs)
        not_loop = src != dst
        return (src[not_loop].to(self.device), dst[not_loop].to(self.device),
                desc[not_loop].to(self.device))

    def _build_link_csr(self, src: Tensor, dst: Tensor) -> None:
        """``link_rowptr``/``link_col``: each product's distinct training links in either
        direction, whatever the description (the ``any_link`` false negatives)."""
        n = self.num_products
        row, col = to_undirected(torch.stack([src, dst]), num_nodes=n)  # deduplicated, sorted by row
        #: (N + 1,) offsets into :attr:`link_col` (``any_link`` scope only).
        self.link_rowptr = torch.zeros(n + 1, dtype=torch.long, device=self.device)
        self.link_rowptr[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
        self.link_rowptr = self.link_rowptr.to(self.index_dtype)
        #: every product linked to the row's product.
        self.link_col = col.to(self.index_dtype)

    def _build_csr(self, src: Tensor, dst: Tensor, desc: Tensor) -> None:
        """Sort and deduplicate pairs by (src, desc, dst); CSR over anchors and groups."""
        num_products, num_desc = self.num_products, self.num_descriptions
        if num_products * num_products * num_desc < 1 << 63:
            key = (src * num_desc + desc) * num_products + dst
            key, order = torch.sort(key)
            fresh = torch.ones_like(key, dtype=torch.bool)
            fresh[1:] = key[1:] != key[:-1]
            order = order[fresh]
        else:  # the combined key would overflow int64: stable lexicographic sorts
            order = torch.argsort(dst, stable=True)
            order = order[torch.argsort(desc[order], stable=True)]
            order = order[torch.argsort(src[order], stable=True)]
            same = ((src[order][1:] == src[order][:-1]) & (desc[order][1:] == desc[order][:-1])
                    & (dst[order][1:] == dst[order][:-1]))
            order = order[torch.cat([same.new_ones(1), ~same])]
        src, dst, desc = src[order], dst[order], desc[order]
        self.num_pairs = src.numel()
        #: (N + 1,) CSR offsets of each anchor's pairs.
        self.rowptr = torch.zeros(num_products + 1, dtype=torch.long, device=self.device)
        self.rowptr[1:] = torch.cumsum(torch.bincount(src, minlength=num_products), 0)
        # (anchor, description) groups: contiguous runs in CSR order.
        new_group = torch.ones_like(src, dtype=torch.bool)
        new_group[1:] = (src[1:] != src[:-1]) | (desc[1:] != desc[:-1])
        group = torch.cumsum(new_group, 0) - 1
        starts = torch.nonzero(new_group).flatten()
        group_ptr = torch.cat([starts, starts.new_tensor([self.num_pairs])])
        # (M, 4) [target, description, group start, group end] of each pair: one row, so a
        # positive costs one cache miss; int32 where it fits, to halve the footprint.
        self.edge_info = torch.stack(
            [dst, desc, group_ptr.index_select(0, group), group_ptr.index_select(0, group + 1)],
            dim=1).to(self.index_dtype)
        self._pair_target = dst

    def _build_categories(self, data: HeteroData) -> None:
        store = data[PRODUCT]
        if "category_id" in store:
            category = store.category_id.to(self.device, torch.long)
        else:
            category = torch.full((self.num_products,), -1, dtype=torch.long, device=self.device)
        #: (N,) leaf category of each product (-1 for none).
        self.category = category
        has = category >= 0
        num_categories = max(int(category.max()) + 1 if bool(has.any()) else 0, 1)
        members = torch.nonzero(has).flatten()
        members = members[torch.argsort(category[members], stable=True)]
        #: CSR of products per category; a trailing sentinel keeps clamped gathers in range.
        self.category_members = torch.cat([members, members.new_zeros(1)])
        self.category_ptr = torch.zeros(num_categories + 1, dtype=torch.long, device=self.device)
        self.category_ptr[1:] = torch.cumsum(torch.bincount(category[has],
                                                            minlength=num_categories), 0)

    def _build_slots(self) -> None:
        degree = self.rowptr[1:] - self.rowptr[:-1]
        k = self.positives_per_anchor
        num_slots = (degree + k - 1) // k
        slot_anchor = torch.repeat_interleave(
            torch.arange(self.num_products, device=self.device), num_slots)
        first = torch.cumsum(num_slots, 0) - num_slots
        slot_chunk = (torch.arange(slot_anchor.numel(), device=self.device)
                      - first.index_select(0, slot_anchor))
        # (S, 2) [anchor, chunk] of each slot: one row, one cache miss per slot
        self._slot_table = torch.stack([slot_anchor, slot_chunk], dim=1).to(self.index_dtype)
        self.num_slots = slot_anchor.numel()

    @property
    def slot_anchor(self) -> Tensor:
        """(S,) anchor of each slot (a view, ``index_dtype``)."""
        return self._slot_table[:, 0]

    def _build_anchor_info(self) -> None:
        """(N, 4) [first CSR pair, degree, category start in pool, category size] per product."""
        has = self.category >= 0
        category = self.category.clamp_min(0)
        category_start = self.category_ptr.index_select(0, category)
        category_size = (self.category_ptr.index_select(0, category + 1) - category_start) * has
        self._anchor_info = torch.stack(
            [self.rowptr[:-1], self.rowptr[1:] - self.rowptr[:-1], category_start,
             category_size], dim=1).to(self.index_dtype)

    # ------------------------------------------------------------------ epochs
    def __len__(self) -> int:
        """Batches per epoch."""
        return (self.num_slots + self.batch_size - 1) // self.batch_size

    def _generator(self, *stream: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(mix_seed(self.seed, *stream))
        return generator

    def _epoch_order(self, epoch: int) -> tuple[Tensor, Tensor]:
        """The epoch's slot permutation (S,) and per-anchor rotation offsets (N,)."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = self._generator(epoch, -1)
            slot_order = torch.randperm(self.num_slots, generator=generator, device=self.device)
            rotation = huge_page_copy(torch.randint(0, 1 << 62, (self.num_products,),
                                                    generator=generator, device=self.device))
            self._epoch_cache = (epoch, slot_order, rotation)
        return self._epoch_cache[1], self._epoch_cache[2]

    def __getstate__(self) -> dict:
        # per-thread scratch does not travel (a thread-local cannot be pickled); the copy
        # builds its own on first use in whichever thread calls it
        state = self.__dict__.copy()
        del state["_scratch"], state["_owner"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._owner = threading.get_ident()
        self._scratch = threading.local()

    # ------------------------------------------------------------------ batches
    def _product_table(self) -> BatchProductTable:
        """The product table of the calling thread: the sampler's own for the thread that
        built it, a private one (built on first use) for any other, so prefetch workers
        (``prefetch_workers > 1``) never share scratch."""
        if threading.get_ident() == self._owner:
            return self._products
        table = getattr(self._scratch, "table", None)
        if table is None:
            table = BatchProductTable(self.num_products, self._max_references,
                                      self.index_dtype, self.device)
            self._scratch.table = table
        return table

    def batch_at(self, epoch: int, index: int) -> PairBatch:
        """Batch ``index`` of epoch ``epoch`` (a pure function of seed, epoch and index)."""
        if not 0 <= index < len(self):
            raise ValueError(f"batch index {index} out of range; accepted: 0..{len(self) - 1}")
        device, index_dtype = self.device, self.index_dtype
        slot_order, rotation = self._epoch_order(epoch)
        generator = self._generator(epoch, index)
        slots = slot_order[index * self.batch_size:(index + 1) * self.batch_size]
        num_slots, k = slots.numel(), self.positives_per_anchor
        # per slot (B,)
        anchor, chunk = gather_rows(self._slot_table, slots).unbind(1)
        anchor_info = gather_rows(self._anchor_info, anchor)  # (B, 4)
        start, degree = anchor_info[:, 0], anchor_info[:, 1]
        stride = (degree + k - 1) // k  # the anchor's number of slots
        # slot c holds the rotated local positions c, c + n, c + 2n, ... below the degree
        count = (degree - chunk + stride - 1) // stride
        # rotated first position, below 2 * degree, so no per-pair modulo is needed
        offset = chunk + (rotation.index_select(0, anchor) % degree).to(index_dtype)
        slot_of_pos, step = expand_segments(torch.zeros_like(count), count)
        per_pos = gather_rows(torch.stack([offset, stride, degree, start], dim=1), slot_of_pos)
        local = per_pos[:, 0] + per_pos[:, 1] * step
        slot_degree = per_pos[:, 2]
        local -= (local >= slot_degree) * slot_degree
        edge = per_pos[:, 3] + local
        num_pos = edge.numel()
        num_pairs = num_pos + (num_slots if self.include_self_pairs else 0)
        info = gather_rows(self.edge_info, edge)  # (P_pos, 4): target, desc, group start, end

        # per pair (P,): the relation pairs, then the self pairs (target = anchor, no group)
        pair_info = torch.empty(num_pairs, 4, dtype=index_dtype, device=device)
        pair_info[:num_pos] = info
        slot_info = torch.stack([anchor, anchor_info[:, 2], anchor_info[:, 3], start], dim=1)
        pair_slot = torch.empty(num_pairs, 4, dtype=index_dtype, device=device)
        pair_slot[:num_pos] = gather_rows(slot_info, slot_of_pos)
        if self.include_self_pairs:
            pair_info[num_pos:, 0] = anchor
            pair_info[num_pos:, 1] = 0
            pair_info[num_pos:, 2:] = start[:, None]
            pair_slot[num_pos:] = slot_info
        src, dst = pair_slot[:, 0], pair_info[:, 0]
        group_start, group_end = pair_info[:, 2], pair_info[:, 3]

        # the (anchor, description) group of every relation pair; a pair's own target is a
        # member already at hand, so only the other members are read from the pool (the
        # pair's own slot reads pool[0], which stays in cache)
        nbr_row, nbr_pos = expand_segments(group_start, group_end - group_start)
        pair_edge = torch.zeros(num_pairs, dtype=index_dtype, device=device)
        pair_edge[:num_pos] = edge
        own = nbr_pos == pair_edge.index_select(0, nbr_row)
        other = self.pool.index_select(0, (nbr_pos + self.relation_offset) * ~own)
        nbr = other + own * (dst.index_select(0, nbr_row) - other)

        if self.num_hard_negatives:
            pair_degree = torch.empty(num_pairs, dtype=index_dtype, device=device)
            pair_degree[:num_pos] = per_pos[:, 2]
            pair_degree[num_pos:] = degree[:num_pairs - num_pos]
            context = PairContext(src=src, category_start=pair_slot[:, 1],
                                  category_size=pair_slot[:, 2], pair_start=pair_slot[:, 3],
                                  degree=pair_degree, group_start=group_start,
                                  group_end=group_end)
            hard_neg, hard_kind = draw_hard_negatives(
                context, self.pool, self.relation_offset,
                num_negatives=self.num_hard_negatives, rounds=self.rejection_rounds,
                relation_fraction=self.relation_negative_fraction, nbr_row=nbr_row, nbr=nbr,
                generator=generator)
        else:
            hard_neg = torch.zeros(num_pairs, 0, dtype=index_dtype, device=device)
            hard_kind = hard_neg.to(torch.int8)
        # references: anchors, relation targets (self pairs' targets are their anchors), hard
        # negatives (a missing one stands in as its pair's target, present anyway)
        missing = hard_neg < 0
        stand_in = hard_neg + missing * (dst[:, None] + 1)
        if self.false_negative_scope == "any_link":
            # every product linked to the anchor either way, the pair's own target among them
            link_start = self.link_rowptr.index_select(0, src)
            link_row, link_pos = expand_segments(
                link_start, self.link_rowptr.index_select(0, src + 1) - link_start)
            linked = (link_row, self.link_col.index_select(0, link_pos))
        else:
            linked = (nbr_row, nbr)
        table = self._product_table()
        products, local = table.index(
            torch.cat([anchor, dst[:num_pos], stand_in.flatten()]))
        anchor_local = local[:num_slots]
        src_local = torch.empty(num_pairs, dtype=torch.long, device=device)
        src_local[:num_pos] = anchor_local.index_select(0, slot_of_pos)
        src_local[num_pos:] = anchor_local[:num_pairs - num_pos]
        dst_local = torch.empty(num_pairs, dtype=torch.long, device=device)
        dst_local[:num_pos] = local[num_slots:num_slots + num_pos]
        dst_local[num_pos:] = anchor_local[:num_pairs - num_pos]
        hard_neg_local = (local[num_slots + num_pos:].view_as(hard_neg).long() + 1) * ~missing - 1
        return PairBatch(
            src=src.long(), dst=dst.long(), desc_id=pair_info[:, 1].long(),
            is_self=torch.arange(num_pairs, device=device) >= num_pos,
            hard_neg=hard_neg.long(), hard_neg_kind=hard_kind, products=products,
            src_local=src_local, dst_local=dst_local, hard_neg_local=hard_neg_local,
            false_negative_index=self._false_negative_index(table, *linked, dst_local, num_pos))

    def _false_negative_index(self, table: BatchProductTable, nbr_row: Tensor, nbr: Tensor,
                              dst_local: Tensor, num_pos: int) -> Tensor:
        """(2, F) int64 ``(pair, local product)``: relation pairs' group members present in
        the batch (in ``nbr`` order), then each self pair's anchor."""
        device = nbr.device
        present, member_local = table.lookup(nbr)
        num_self = dst_local.numel() - num_pos
        position = torch.cumsum(present, 0, dtype=nbr_row.dtype)
        num_rel = int(position[-1]) if position.numel() else 0
        num_fn = num_rel + num_self
        # compact the present members into both rows at once; absent ones land in slot 2F
        out = torch.empty(2 * num_fn + 1, dtype=torch.long, device=device)
        target = ((position - 1 - 2 * num_fn) * present + 2 * num_fn).long()
        out.scatter_(0, target, nbr_row.long())
        out.scatter_(0, target + num_fn * present, member_local.long())
        out[num_rel:num_fn] = torch.arange(num_pos, num_pos + num_self, device=device)
        out[num_fn + num_rel:2 * num_fn] = dst_local[num_pos:]
        return out[:2 * num_fn].view(2, num_fn)
