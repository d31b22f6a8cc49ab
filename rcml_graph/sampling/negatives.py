"""Hard negatives: same-category products and relation-specific neighbours, vectorised.

A pair ``(anchor, target, description)`` gets ``H`` hard-negative columns. Each column tries
one kind first (relation-specific with probability ``relation_fraction``, when the anchor
has such neighbours) for up to ``rounds`` draws, then the other kind for up to ``rounds``
draws, and is -1 if every draw is rejected. A draw is rejected when it is the anchor or is
linked to the anchor under the pair's description. The first round covers every column at
once; later rounds redraw only the rejected columns, so a batch costs about one draw per
column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

from rcml_graph.sampling.batch import NO_NEGATIVE, RELATION_SPECIFIC, SAME_CATEGORY
from rcml_graph.sampling.ops import expand_segments

_CAT: Final = SAME_CATEGORY
_REL: Final = RELATION_SPECIFIC


@dataclass
class PairContext:
    """Per-pair index ranges a hard-negative draw needs; every field is (P,) int64.

    ``pool`` holds the category members (``[0, relation_offset)``) followed by the target
    of every CSR pair, so either kind of candidate is one gather from one tensor.
    """

    src: Tensor
    category_start: Tensor  # into pool
    category_size: Tensor
    pair_start: Tensor  # the anchor's first CSR pair
    degree: Tensor  # the anchor's number of CSR pairs
    group_start: Tensor  # the (anchor, description) group: [group_start, group_end)
    group_end: Tensor


def draw_hard_negatives(ctx: PairContext, pool: Tensor, relation_offset: int, *,
                        num_negatives: int, rounds: int, relation_fraction: float,
                        nbr_row: Tensor, nbr: Tensor,
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(P, H) hard negatives (-1 for none) and their kinds (int8).

    ``nbr_row``/``nbr`` enumerate every pair's (anchor, description) group (row, member), as
    the false-negative join already computed them; round one reuses them.
    """
    device = ctx.src.device
    num_pairs, h = ctx.src.numel(), num_negatives
    num_entries = num_pairs * h
    pair_of = torch.arange(num_pairs, device=device).repeat_interleave(h)  # (E,)
    group_size = ctx.group_end - ctx.group_start
    num_other = ctx.degree - group_size  # relation-specific candidates of each pair
    cat_ok = (ctx.category_size > 1).index_select(0, pair_of)
    rel_ok = (num_other > 0).index_select(0, pair_of)
    prefer_rel = torch.rand(num_entries, generator=generator, device=device) < relation_fraction
    first_rel = torch.where(prefer_rel, rel_ok, ~cat_ok)
    second_ok = torch.where(first_rel, cat_ok, rel_ok)

    before = ctx.group_start - ctx.pair_start  # the group's offset in the neighbourhood
    relation_start = ctx.pair_start + relation_offset

    def draw(pair: Tensor | None, is_rel: Tensor) -> Tensor:
        """One candidate per entry; ``pair`` None means one entry per pair (H = 1)."""
        take = (lambda x: x) if pair is None else (lambda x: x.index_select(0, pair))
        u = torch.rand(is_rel.numel(), generator=generator, device=device)
        # float32 draws: their bias (about 2^-24 * size) is far below the sampling noise
        cat_size, other, gap = take(ctx.category_size), take(num_other), take(group_size)
        size = torch.where(is_rel, other, cat_size)
        pick = (u * size).long().clamp_max(size - 1).clamp_min(0)
        pick += torch.where(is_rel, take(relation_start) + (pick >= take(before)) * gap,
                            take(ctx.category_start))
        return pool.index_select(0, pick.clamp_max(pool.numel() - 1)).long()

    # round one: every column
    cand = draw(None if h == 1 else pair_of, first_rel)
    hits = cand.view(num_pairs, h).index_select(0, nbr_row) == nbr[:, None]  # (T, H)
    hit_row, hit_col = torch.nonzero(hits, as_tuple=True)
    linked = torch.zeros(num_entries, dtype=torch.bool, device=device)
    linked[nbr_row.index_select(0, hit_row) * h + hit_col] = True
    ok = (rel_ok | cat_ok) & (cand != ctx.src.index_select(0, pair_of)) & ~linked
    hard_neg = torch.where(ok, cand, NO_NEGATIVE)
    kind = torch.where(ok, torch.where(first_rel, _REL, _CAT), NO_NEGATIVE).to(torch.int8)
    pending = (rel_ok | cat_ok) & ~ok

    # later rounds: only the rejected columns
    for attempt in range(1, 2 * rounds):
        if attempt == rounds:  # switch to the other kind where it exists
            pending &= second_ok
        entry = torch.nonzero(pending).flatten()
        if entry.numel() == 0:
            break
        pair = pair_of.index_select(0, entry)
        is_rel = first_rel.index_select(0, entry) ^ (attempt >= rounds)
        cand = draw(pair, is_rel)
        row, position = expand_segments(ctx.group_start.index_select(0, pair),
                                        group_size.index_select(0, pair))
        member = pool.index_select(0, position + relation_offset).long()
        linked = torch.zeros(entry.numel(), dtype=torch.bool, device=device)
        linked[row[member == cand.index_select(0, row)]] = True
        ok = (cand != ctx.src.index_select(0, pair)) & ~linked
        accepted = entry[ok]
        hard_neg[accepted] = cand[ok]
        kind[accepted] = torch.where(is_rel[ok], _REL, _CAT).to(torch.int8)
        pending[accepted] = False
    return hard_neg.view(num_pairs, h), kind.view(num_pairs, h)
