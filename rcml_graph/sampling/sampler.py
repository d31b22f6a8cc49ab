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
    leaked into training.

Determinism
    Batch ``b`` of epoch ``e`` is a pure function of ``(seed, e, b)`` on a given device type,
    so :meth:`RelationPairSampler.state_dict` need only hold ``(epoch, batch)``. A sampler
    keeps a product-sized scratch table, so one instance must not serve two threads at once
    (DataLoader worker processes each get their own copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.relations import PRODUCT, RELATION_KINDS, check_kind, edge_type
from rcml_graph.sampling.batch import NO_NEGATIVE, PairBatch
from rcml_graph.sampling.cursor import EpochCursor
from rcml_graph.sampling.negatives import PairContext, draw_hard_negatives
from rcml_graph.sampling.ops import expand_segments, mix_seed

#: Split code of training edges.
TRAIN_SPLIT: Final = 0

# Scratch-table value of a product never referenced; batch stamps count down from below it.
_UNSEEN: Final = torch.iinfo(torch.long).max
_FIRST_STAMP: Final = (_UNSEEN >> 32) - 1
_LOW32: Final = (1 << 32) - 1


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
        for kind in directed_kinds:
            check_kind(kind)
        self.batch_size = batch_size
        self.positives_per_anchor = positives_per_anchor
        self.num_hard_negatives = num_hard_negatives
        self.include_self_pairs = include_self_pairs
        self.relation_negative_fraction = relation_negative_fraction
        self.rejection_rounds = rejection_rounds
        self.seed = seed
        self.device = torch.device(device)
        self.relation_kinds = self._select_kinds(data, relation_kinds)

        self.num_products = int(data[PRODUCT].num_nodes)
        src, dst, desc = self._collect_pairs(data, split, set(directed_kinds))
        self.num_descriptions = max(len(getattr(data, "relation_text", None) or []),
                                    int(desc.max()) + 1 if desc.numel() else 1)
        self._build_csr(src, dst, desc)
        self._build_categories(data)
        self._build_slots()
        #: category members then every CSR pair's target: the hard-negative candidate pool.
        self.pool = torch.cat([self.category_members, self._pair_target]).to(self.edge_info.dtype)
        self.relation_offset = self.category_members.numel()
        del self._pair_target
        # product -> (stamp << 32 | first reference) in the current batch; see _index_products
        self._first_reference = torch.full((self.num_products,), _UNSEEN, dtype=torch.long,
                                           device=self.device)
        self._stamp = _FIRST_STAMP
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
        fits = max(self.num_pairs, num_products, num_desc) < 1 << 31
        self.edge_info = torch.stack(
            [dst, desc, group_ptr.index_select(0, group), group_ptr.index_select(0, group + 1)],
            dim=1).to(torch.int32 if fits else torch.long)
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
        #: (S,) anchor and chunk number of each slot.
        self.slot_anchor = torch.repeat_interleave(
            torch.arange(self.num_products, device=self.device), num_slots)
        first = torch.cumsum(num_slots, 0) - num_slots
        self.slot_chunk = (torch.arange(self.slot_anchor.numel(), device=self.device)
                           - first.index_select(0, self.slot_anchor))
        self.num_slots = self.slot_anchor.numel()

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
            rotation = torch.randint(0, 1 << 62, (self.num_products,), generator=generator,
                                     device=self.device)
            self._epoch_cache = (epoch, slot_order, rotation)
        return self._epoch_cache[1], self._epoch_cache[2]

    # ------------------------------------------------------------------ batches
    def batch_at(self, epoch: int, index: int) -> PairBatch:
        """Batch ``index`` of epoch ``epoch`` (a pure function of seed, epoch and index)."""
        if not 0 <= index < len(self):
            raise ValueError(f"batch index {index} out of range; accepted: 0..{len(self) - 1}")
        device = self.device
        slot_order, rotation = self._epoch_order(epoch)
        generator = self._generator(epoch, index)
        slots = slot_order[index * self.batch_size:(index + 1) * self.batch_size]
        num_slots, k = slots.numel(), self.positives_per_anchor
        # per slot (B,)
        anchor = self.slot_anchor.index_select(0, slots)
        chunk = self.slot_chunk.index_select(0, slots)
        start = self.rowptr.index_select(0, anchor)
        degree = self.rowptr.index_select(0, anchor + 1) - start
        stride = (degree + k - 1) // k  # the anchor's number of slots
        # slot c holds the rotated local positions c, c + n, c + 2n, ... below the degree
        count = (degree - chunk + stride - 1) // stride
        slot_of_pos, step = expand_segments(torch.zeros_like(count), count)  # (P_pos,)
        # rotated first position, below 2 * degree, so no per-pair modulo is needed
        offset = chunk + rotation.index_select(0, anchor) % degree
        local = (offset.index_select(0, slot_of_pos)
                 + stride.index_select(0, slot_of_pos) * step)
        slot_degree = degree.index_select(0, slot_of_pos)
        local -= (local >= slot_degree) * slot_degree
        edge = start.index_select(0, slot_of_pos) + local
        info = self._gather_edge_info(edge)  # (4, P_pos): target, desc, group start, group end
        num_pos = edge.numel()
        if self.include_self_pairs:
            # a self pair's target is its anchor; the self relation has no CSR group
            self_info = torch.stack([anchor, torch.zeros_like(anchor), start, start])
            info = torch.cat([info, self_info], dim=1)
            slot_of_pair = torch.cat([slot_of_pos, torch.arange(num_slots, device=device)])
        else:
            slot_of_pair = slot_of_pos
        dst, desc, group_start, group_end = info
        num_pairs = slot_of_pair.numel()
        src = anchor.index_select(0, slot_of_pair)

        # the (anchor, description) group of every relation pair
        nbr_row, nbr_pos = expand_segments(group_start, group_end - group_start)
        nbr = self.pool.index_select(0, nbr_pos + self.relation_offset).long()

        if self.num_hard_negatives:
            category = self.category.index_select(0, anchor)
            cat_index = category.clamp_min(0)
            cat_start = self.category_ptr.index_select(0, cat_index)
            cat_size = torch.where(category >= 0,
                                   self.category_ptr.index_select(0, cat_index + 1) - cat_start,
                                   0)
            per_slot = lambda x: x.index_select(0, slot_of_pair)
            context = PairContext(src=src, category_start=per_slot(cat_start),
                                  category_size=per_slot(cat_size), pair_start=per_slot(start),
                                  degree=per_slot(degree), group_start=group_start,
                                  group_end=group_end)
            hard_neg, hard_kind = draw_hard_negatives(
                context, self.pool, self.relation_offset,
                num_negatives=self.num_hard_negatives, rounds=self.rejection_rounds,
                relation_fraction=self.relation_negative_fraction, nbr_row=nbr_row, nbr=nbr,
                generator=generator)
        else:
            hard_neg = torch.zeros(num_pairs, 0, dtype=torch.long, device=device)
            hard_kind = hard_neg.to(torch.int8)
        products, inverse, fn_index = self._index_products(anchor, dst, hard_neg, nbr_row, nbr,
                                                           num_pos)
        return PairBatch(
            src=src, dst=dst, desc_id=desc,
            is_self=torch.arange(num_pairs, device=device) >= num_pos,
            hard_neg=hard_neg, hard_neg_kind=hard_kind, products=products,
            src_local=inverse[:num_slots].index_select(0, slot_of_pair),
            dst_local=inverse[num_slots:num_slots + num_pairs],
            hard_neg_local=torch.where(hard_neg >= 0,
                                       inverse[num_slots + num_pairs:].view_as(hard_neg),
                                       NO_NEGATIVE),
            false_negative_index=fn_index)

    def _gather_edge_info(self, edge: Tensor) -> Tensor:
        """(4, E) int64 rows of ``edge_info`` for CSR pairs ``edge``.

        An int32 row is 16 bytes: viewed as one complex128 it moves in a single gather, which
        is several times faster than a 2-D ``index_select``.
        """
        if self.edge_info.dtype == torch.int32:
            rows = self.edge_info.view(torch.complex128).view(-1).index_select(0, edge)
            rows = rows.view(torch.int32).view(-1, self.edge_info.shape[1])
        else:
            rows = self.edge_info.index_select(0, edge)
        return rows.T.to(torch.long, memory_format=torch.contiguous_format)

    def _index_products(self, anchor: Tensor, dst: Tensor, hard_neg: Tensor, nbr_row: Tensor,
                        nbr: Tensor, num_pos: int) -> tuple[Tensor, Tensor, Tensor]:
        """Unique products, the local index of each reference, false-negative coordinates.

        References are ``cat([anchor, dst, hard_neg])``. A product-sized scratch table holds
        ``stamp << 32 | first reference`` for each product (an order-independent ``amin``
        scatter, so deterministic on GPU too); stamps count down per batch, so entries left
        by earlier batches lose the ``amin`` and fail the stamp test, and the table is never
        cleared. Deduplication and the neighbour join thus cost a few gathers per entry and
        no sort.
        """
        device = self.device
        num_slots, num_pairs = anchor.numel(), dst.numel()
        # a missing hard negative stands in as its pair's target (present anyway)
        stand_in = torch.where(hard_neg >= 0, hard_neg, dst[:, None]).flatten()
        # self pairs' targets are their anchors, so they are not listed again
        every = torch.cat([anchor, dst[:num_pos], stand_in])
        position = torch.arange(every.numel(), device=device)
        stamp = self._next_stamp()
        table = self._first_reference
        table.scatter_reduce_(0, every, position + (stamp << 32), reduce="amin")
        first = table.index_select(0, every) & _LOW32
        nbr_entry = table.index_select(0, nbr)
        is_first = first == position
        local_of_first = torch.cumsum(is_first, 0) - 1
        reference_local = local_of_first.index_select(0, first)
        products = torch.empty(int(local_of_first[-1]) + 1, dtype=torch.long, device=device)
        # every writer of a slot writes the same product, so the race is harmless
        products.scatter_(0, reference_local, every)
        # (B + P + P*H,) local index of anchors, targets (self pairs: their anchors), hard
        anchor_local = reference_local[:num_slots]
        inverse = torch.cat([anchor_local, reference_local[num_slots:num_slots + num_pos],
                             anchor_local[:num_pairs - num_pos],
                             reference_local[num_slots + num_pos:]])
        # relation pairs: group members present in the batch; self pairs: the anchor itself
        matched = torch.nonzero((nbr_entry >> 32) == stamp).flatten()
        rows = torch.cat([nbr_row.index_select(0, matched),
                          torch.arange(num_pos, num_pairs, device=device)])
        cols = torch.cat([local_of_first.index_select(
                              0, nbr_entry.index_select(0, matched) & _LOW32),
                          inverse[num_slots + num_pos:num_slots + num_pairs]])
        return products, inverse, torch.stack([rows, cols])

    def _next_stamp(self) -> int:
        self._stamp -= 1
        if self._stamp < 0:  # after 2^31 batches: start the table afresh
            self._first_reference.fill_(_UNSEEN)
            self._stamp = _FIRST_STAMP - 1
        return self._stamp
