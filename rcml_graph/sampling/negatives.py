"""Hard negatives: same-category products and relation-specific neighbours, vectorised.

A pair ``(anchor, target, description)`` gets ``H`` hard-negative columns. Each column tries
one kind first (relation-specific with probability ``relation_fraction``, when the anchor
has such neighbours) for up to ``rounds`` draws, then the other kind for up to ``rounds``
draws, and is -1 if every draw is rejected. A draw is rejected when it is the anchor or is
linked to the anchor under the pair's description. The first round covers every column at
once; later rounds redraw only the rejected columns, so a batch costs about one draw per
column.

Selections are written as arithmetic on masks (``a + mask * (b - a)``) rather than
``torch.where``, which is several times slower on CPU for these sizes.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """Per-pair index ranges a hard-negative draw needs; every field is (P,), one integer dtype.

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
    """(P, H) hard negatives (-1 for none; dtype of ``pool``) and their kinds (int8).

    ``nbr_row``/``nbr`` enumerate every pair's (anchor, description) group (row, member), as
    the false-negative join already computed them; round one reuses them.
    """
    device, index_dtype = ctx.src.device, ctx.src.dtype
    num_pairs, h = ctx.src.numel(), num_negatives
    num_entries = num_pairs * h
    group_size = ctx.group_end - ctx.group_start
    num_other = ctx.degree - group_size  # relation-specific candidates of each pair
    before = ctx.group_start - ctx.pair_start  # the group's offset in the neighbourhood
    relation_start = ctx.pair_start + relation_offset
    if h == 1:  # one entry per pair: no per-entry gathers
        pair_of = None
        take: Callable[[Tensor], Tensor] = lambda x: x
    else:
        pair_of = torch.arange(num_pairs, dtype=index_dtype, device=device).repeat_interleave(h)
        take = lambda x: x.index_select(0, pair_of)
    cat_ok = take(ctx.category_size > 1)
    rel_ok = take(num_other > 0)
    any_ok = rel_ok | cat_ok
    prefer_rel = torch.rand(num_entries, generator=generator, device=device) < relation_fraction
    first_rel = (prefer_rel & rel_ok) | ~(prefer_rel | cat_ok)
    second_ok = (first_rel & cat_ok) | ~(first_rel | ~rel_ok)

    def draw(pick_of: Callable[[Tensor], Tensor], is_rel: Tensor) -> Tensor:
        """One candidate per entry; ``pick_of`` maps per-pair fields to the entries."""
        u = torch.rand(is_rel.numel(), generator=generator, device=device)
        # float32 draws: their bias (about 2^-24 * size) is far below the sampling noise
        cat_size = pick_of(ctx.category_size)
        size = cat_size + is_rel * (pick_of(num_other) - cat_size)
        pick = torch.minimum((u * size).to(index_dtype), size - 1).clamp_min_(0)
        cat_start = pick_of(ctx.category_start)
        relation_pick = (pick_of(relation_start)
                         + (pick >= pick_of(before)) * pick_of(group_size))
        pick += cat_start + is_rel * (relation_pick - cat_start)
        return pool.index_select(0, pick.clamp_max_(pool.numel() - 1))

    # round one: every column
    cand = draw(take, first_rel)
    if h == 1:
        hits = cand.index_select(0, nbr_row) == nbr
        linked = torch.zeros(num_entries, dtype=torch.bool, device=device)
        linked[nbr_row[hits]] = True
    else:
        hits = cand.view(num_pairs, h).index_select(0, nbr_row) == nbr[:, None]  # (T, H)
        hit_row, hit_col = torch.nonzero(hits, as_tuple=True)
        linked = torch.zeros(num_entries, dtype=torch.bool, device=device)
        linked[nbr_row.index_select(0, hit_row) * h + hit_col] = True
    ok = any_ok & (cand != take(ctx.src)) & ~linked
    hard_neg = (cand + 1) * ok - 1
    kind = first_rel.to(torch.int8) * (_REL - _CAT) + _CAT
    kind = (kind - NO_NEGATIVE) * ok + NO_NEGATIVE

    # later rounds: only the rejected columns, which are few, so work on them alone
    entry = torch.nonzero(any_ok & ~ok).flatten()
    if entry.numel():
        pending = torch.ones(entry.numel(), dtype=torch.bool, device=device)
        entry_first_rel, entry_second_ok = first_rel[entry], second_ok[entry]
    for attempt in range(1, 2 * rounds):
        if entry.numel() == 0:
            break
        if attempt == rounds:  # switch to the other kind where it exists
            pending &= entry_second_ok
        which = torch.nonzero(pending).flatten()
        if which.numel() == 0:
            break
        this_entry = entry.index_select(0, which)
        pair = this_entry if pair_of is None else pair_of.index_select(0, this_entry)
        is_rel = entry_first_rel.index_select(0, which) ^ (attempt >= rounds)
        cand = draw(lambda x, index=pair: x.index_select(0, index), is_rel)
        row, position = expand_segments(ctx.group_start.index_select(0, pair),
                                        group_size.index_select(0, pair))
        member = pool.index_select(0, position + relation_offset)
        linked = torch.zeros(which.numel(), dtype=torch.bool, device=device)
        linked[row[member == cand.index_select(0, row)]] = True
        ok = (cand != ctx.src.index_select(0, pair)) & ~linked
        accepted = this_entry[ok]
        hard_neg[accepted] = cand[ok]
        kind[accepted] = (is_rel[ok].to(torch.int8) * (_REL - _CAT) + _CAT)
        pending[which[ok]] = False
    return hard_neg.view(num_pairs, h), kind.view(num_pairs, h)
