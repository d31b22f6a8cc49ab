"""Inter- and intra-modal InfoNCE between relation-conditioned source and target views.

A training pair ``i`` links a source view ``(s_i, r_i)`` to a target view ``(t_i, r_i)``;
the self pair (a product's own image and text under the self relation) is the pair with
``s_i = t_i``, so CLIP is the special case of a batch of self pairs with the inter-modal
terms only. With ``S = logit_scale * A @ B.T`` (``A`` source features, ``B`` target
features) each term is the symmetric CLIP loss ``(CE(S) + CE(S.T)) / 2`` with the diagonal
as positives:

* inter-modal: ``i2t`` (source image vs target text) and ``t2i`` (source text vs target image);
* intra-modal: ``i2i`` (source image vs target image) and ``t2t`` (source text vs target text).

``total = w_inter * (i2t + t2i) / 2 + w_intra * (i2i + t2t) / 2``.

The terms share their pairs and their false-negative mask, so they are computed stacked:
one batched ``(T, P, P)`` matmul and one masked logsumexp per direction for all of them
(:func:`_stacked_symmetric_info_nce`; equal to the per-term :func:`info_nce` composition,
tested), optionally through :func:`torch.compile` (:meth:`RCMLLoss.compile_terms`).

False negatives: pairs ``i != j`` with the same source view (``s_i = s_j`` and
``r_i = r_j``; then ``(s_i, t_j)`` is itself a link under ``r_i``) or the same target view
are not negatives of each other, nor is ``i``'s source view a negative of itself as ``j``'s
target; their logits are set to ``-inf`` before the softmax. For relation-free views (a
global-only head) the keys are the products alone: such a view is the same under every relation.
An explicit ``(P, P)`` mask (the sampler's graph-based one) can be given as well.

Under DDP (``torch.distributed`` initialised with world size > 1) the features are gathered
from every rank with a gradient-carrying all-gather (``torch.distributed.nn.functional.
all_gather``; on torch >= 2.14, which deprecates it, the equivalent functional collective
``all_gather_single_autograd``) and every rank computes the loss of the whole global batch
(open_clip ``ClipLoss`` with ``gather_with_grad=True, local_loss=False``). The view keys,
image-validity masks and explicit masks are gathered alongside (an explicit mask as diagonal
blocks, unless the caller gives the global batch's whole mask, as the training step does), so
the false-negative mask is the one of the global batch. Every rank must hold the same number of
pairs.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

try:
    from torch.distributed._functional_collectives import (
        all_gather_single_autograd as _all_gather_single_autograd,
    )
except ImportError:  # torch < 2.14
    _all_gather_single_autograd = None


def contrastive_logits(a: Tensor, b: Tensor, logit_scale: Tensor | float) -> Tensor:
    """``logit_scale * a @ b.T``: ``(N, E)`` and ``(M, E)`` features to ``(N, M)`` logits."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"contrastive_logits needs (N, E) and (M, E) features; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    return logit_scale * a @ b.T


def view_keys(product_ids: Tensor, relation_ids: Tensor, num_relations: int) -> Tensor:
    """One int64 id per (product, relation) view: equal iff product and relation are equal.

    ``product_ids`` must be global (e.g. graph node ids), not indices into a per-step table,
    so that keys from different ranks are comparable.
    """
    if num_relations < 1:
        raise ValueError(f"num_relations={num_relations} must be positive")
    return product_ids.long() * num_relations + relation_ids.long()


def false_negative_mask(src_key: Tensor, dst_key: Tensor) -> Tensor:
    """``(P, P)`` bool: True where pairs ``i != j`` share their source or their target view, or
    where ``j``'s target view is ``i``'s source view itself (an edge and its reverse in one batch:
    the anchor would be its own negative)."""
    same = ((src_key[:, None] == src_key[None, :]) | (dst_key[:, None] == dst_key[None, :])
            | (src_key[:, None] == dst_key[None, :]))
    return same & ~torch.eye(src_key.shape[0], dtype=torch.bool, device=src_key.device)


def info_nce(
    logits: Tensor,
    targets: Tensor | None = None,
    false_negative_mask: Tensor | None = None,
    row_valid: Tensor | None = None,
    column_valid: Tensor | None = None,
) -> Tensor:
    """Mean InfoNCE (softmax cross-entropy) over the valid rows of ``(N, M)`` logits.

    Args:
        logits: ``(N, M)`` scaled similarities, anchors in rows, candidates in columns.
        targets: None for the diagonal (``N <= M``); ``(N,)`` long column of each row's
            positive; or ``(N, M)`` bool positives (multi-positive: ``-log`` of the softmax
            mass on the positives).
        false_negative_mask: ``(N, M)`` bool, True for candidates that are neither positives
            nor negatives of the row; they get ``-inf`` (a positive is never masked).
        row_valid: ``(N,)`` bool, rows to average over (None: all). A row whose positive
            is not a valid column is dropped as well.
        column_valid: ``(M,)`` bool, candidates that exist (None: all); others get ``-inf``.

    Returns:
        A scalar; 0 (still attached to ``logits``) when no row is valid.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, M); got shape {tuple(logits.shape)}")
    num_rows, num_cols = logits.shape
    device = logits.device
    if targets is None:
        if num_rows > num_cols:
            raise ValueError(f"diagonal targets need N <= M; got logits of shape {(num_rows, num_cols)}")
        targets = torch.arange(num_rows, device=device)
    valid_cols = (
        torch.ones(num_cols, dtype=torch.bool, device=device) if column_valid is None else column_valid.bool()
    )
    if targets.dtype == torch.bool:
        if targets.shape != logits.shape:
            raise ValueError(
                f"a bool positive mask must match logits {tuple(logits.shape)}; got {tuple(targets.shape)}"
            )
        positive = targets
    else:
        if targets.shape != (num_rows,):
            raise ValueError(f"targets must be ({num_rows},) column indices; got {tuple(targets.shape)}")
        return _info_nce_single_positive(logits, targets, false_negative_mask, row_valid, valid_cols)
    positive = positive & valid_cols[None, :]
    valid_rows = positive.any(dim=1)
    if row_valid is not None:
        valid_rows = valid_rows & row_valid.bool()

    excluded = ~valid_cols[None, :].expand(num_rows, num_cols)
    if false_negative_mask is not None:
        excluded = excluded | false_negative_mask.bool()
    # Invalid rows keep finite logits and a dummy positive so that no -inf - -inf NaN can arise.
    excluded = excluded & ~positive & valid_rows[:, None]
    positive = positive | ~valid_rows[:, None]
    logits = logits.masked_fill(~valid_rows[:, None], 0.0).masked_fill(excluded, float("-inf"))

    # In float32 (a no-op outside autocast): CUDA autocast runs logsumexp in float32, CPU
    # autocast would keep bf16; this keeps both the same.
    log_denominator = torch.logsumexp(logits.float(), dim=1)  # (N,)
    log_numerator = torch.logsumexp(logits.masked_fill(~positive, float("-inf")).float(), dim=1)  # (N,)
    per_row = (log_denominator - log_numerator) * valid_rows
    return per_row.sum() / valid_rows.sum().clamp(min=1)


def _info_nce_single_positive(logits: Tensor, targets: Tensor, false_negative_mask: Tensor | None,
                              row_valid: Tensor | None, valid_cols: Tensor) -> Tensor:
    """:func:`info_nce` with one positive column per row, in fewer passes over ``(N, M)``: the
    numerator is the positive's logit itself (no masked copy and second logsumexp), and the
    exclusions are built in one mask. Same value and gradients as the general path."""
    num_rows = logits.shape[0]
    rows = torch.arange(num_rows, device=logits.device)
    valid_rows = valid_cols[targets]  # a row whose positive is no valid column is dropped
    if row_valid is not None:
        valid_rows = valid_rows & row_valid.bool()
    excluded = ~valid_cols[None, :]
    if false_negative_mask is not None:
        excluded = excluded | false_negative_mask.bool()
    else:
        excluded = excluded.expand(num_rows, -1).clone()
    excluded[rows, targets] = False  # a positive is never masked
    # Invalid rows keep finite logits (zeros) so that no -inf - -inf NaN can arise.
    logits = torch.where(valid_rows[:, None], logits.masked_fill(excluded, float("-inf")), 0.0)
    # logsumexp in float32 under CPU autocast too, as CUDA autocast does (see info_nce).
    per_row = (torch.logsumexp(logits.float(), dim=1) - logits[rows, targets]) * valid_rows
    return per_row.sum() / valid_rows.sum().clamp(min=1)


def _stacked_symmetric_info_nce(
    a: Tensor,
    b: Tensor,
    logit_scale: Tensor | float,
    fn_mask: Tensor | None,
    a_valid: Tensor,
    b_valid: Tensor,
    extra_b: Tensor | None = None,
    extra_valid: Tensor | None = None,
) -> Tensor:
    """``T`` symmetric CLIP losses ``(CE(S_t) + CE(S_t.T)) / 2`` with diagonal positives, at once.

    The terms of :class:`RCMLLoss` (i2t, t2i, i2i, t2t) share their pairs and their
    false-negative mask; stacking them turns ~15 operator calls per term and direction into one
    batched matmul and a handful of passes over ``(T, P, P)``, which is what a GPU step of the
    head costs (the conditioned term's logits are mostly masked). Each term equals
    ``(info_nce(S, None, fn, a_valid, b_valid) + info_nce(S.T, None, fn.T, b_valid, a_valid)) / 2``
    with ``extra_b`` appended to the forward rows (tested against that composition).

    Args:
        a, b: ``(T, P, E)`` anchors and candidates of each term.
        fn_mask: ``(P, P)`` bool, shared by every term; True: ``b[j]`` is no negative of ``a[i]``.
        a_valid, b_valid: ``(T, P)`` bool; a pair counts only where both are valid, and an
            invalid side is no candidate in the other direction.
        extra_b: ``(T, P, M, E)`` per-row explicit negatives, forward (``a -> b``) direction only.
        extra_valid: ``(T, P, M)`` bool, False for padding.

    Returns:
        ``(T,)`` losses.
    """
    num_pairs = a.shape[1]
    logits = torch.bmm(a, b.transpose(1, 2)) * logit_scale  # (T, P, P), rows = anchors
    positive = logits.diagonal(dim1=1, dim2=2)  # (T, P)
    shared = (
        torch.zeros(num_pairs, num_pairs, dtype=torch.bool, device=a.device) if fn_mask is None else fn_mask.bool()
    )
    # Every row keeps its own positive (the diagonal is never excluded), so no row is all -inf
    # and invalid rows stay finite: they are weighted 0 below, with finite gradients.
    forward_excluded = shared[None] | ~b_valid[:, None, :]  # (T, P, P): column j is no candidate
    backward_excluded = shared[None] | ~a_valid[:, :, None]  # (T, P, P): row i is no candidate
    for excluded in (forward_excluded, backward_excluded):
        excluded.diagonal(dim1=1, dim2=2).fill_(False)
    # logsumexp in float32 under CPU autocast too, as CUDA autocast does (see info_nce).
    forward_lse = torch.logsumexp(logits.masked_fill(forward_excluded, float("-inf")).float(), dim=2)  # (T, P)
    backward_lse = torch.logsumexp(logits.masked_fill(backward_excluded, float("-inf")).float(), dim=1)  # (T, P)
    if extra_b is not None:
        extra = torch.einsum("tpe,tpme->tpm", a, extra_b) * logit_scale  # (T, P, M)
        if extra_valid is not None:
            # A finite floor, not -inf: a row of padding only would make logsumexp's gradient NaN.
            extra = extra.masked_fill(~extra_valid.bool(), torch.finfo(extra.dtype).min)
        forward_lse = torch.logaddexp(forward_lse, torch.logsumexp(extra.float(), dim=2))
    valid = (a_valid & b_valid).to(forward_lse.dtype)  # (T, P)
    count = valid.sum(dim=1).clamp(min=1)
    forward = ((forward_lse - positive) * valid).sum(dim=1) / count
    backward = ((backward_lse - positive) * valid).sum(dim=1) / count
    return (forward + backward) / 2


def world_size() -> int:
    """The number of processes in the default group (1 outside torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


#: Use the functional collective for CPU (gloo) tensors too (tests of that path set it).
FUNCTIONAL_GATHER_ON_CPU = False


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All-gather ``tensor`` (equal shapes on every rank) along dim 0, gradients flowing back."""
    # torch >= 2.14 deprecates distributed.nn.functional.all_gather for the functional
    # collective; both sum the ranks' gradients in backward (a reduce-scatter). On CPU (gloo)
    # the synchronous one is kept: with the functional collective, two-rank gloo test runs
    # aborted now and then with heap corruption ("malloc(): unaligned tcache chunk detected",
    # SIGSEGV): tests/training/test_ddp.py failed 4 of 46 times in session 17, and 0 of 52
    # with the synchronous gather (root cause not found).
    if _all_gather_single_autograd is not None and (tensor.device.type != "cpu" or FUNCTIONAL_GATHER_ON_CPU):
        return _all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*functional\.all_gather is deprecated", category=FutureWarning)
        return _ContiguousGrad.apply(torch.cat(dist_fn.all_gather(tensor), dim=0))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    The legacy ``distributed.nn.functional.all_gather`` backward on gloo receives into
    ``empty_like(grad)`` buffers; a non-contiguous gradient (a batched matmul's backward gives
    transposed ones) then comes back scrambled (measured: wrong gradients on 2 gloo ranks).
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()


def gather_no_grad(tensor: Tensor) -> Tensor:
    """All-gather ``tensor`` along dim 0 without gradients (bool tensors too)."""
    # gloo cannot all_gather bool tensors: ship them as uint8.
    payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.contiguous()
    gathered = [torch.empty_like(payload) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, payload)
    return torch.cat(gathered, dim=0).to(tensor.dtype)


class RCMLLoss(nn.Module):
    r"""Weighted inter- and intra-modal InfoNCE of RCML (see the module docstring).

    Args:
        w_inter (float, optional): weight of the inter-modal terms ``(i2t + t2i) / 2``.
            (default: 1.0)
        w_intra (float, optional): weight of the intra-modal terms ``(i2i + t2t) / 2``.
            (default: 1.0)
        mask_false_negatives (bool, optional): mask the false negatives given at call time
            (view keys and/or an explicit mask); False ignores both. (default: True)

    Shapes:
        - **input:** src_image, src_text, dst_image, dst_text ``(P, E)`` L2-normalised;
          logit_scale scalar; src_key, dst_key ``(P,)`` long view keys (:func:`view_keys`)
          or None; src_image_valid, dst_image_valid ``(P,)`` bool or None;
          false_negatives ``(P, P)`` bool or None, True where target ``j`` must not be a
          negative of source ``i`` (e.g. :func:`rcml_graph.sampling.false_negative_mask`);
          under DDP each rank's mask covers its own pairs (the cross-rank blocks then come
          from the keys only), or, with ``global_false_negatives``, it is the ``(W P, W P)`` mask
          of the gathered batch (ranks in order), which every rank can build when each holds
          the whole batch (what :func:`rcml_graph.training.pair_loss` gives); relation_ids ``(P,)`` long or None: when given, in-batch candidate
          ``j`` is used for row ``i`` only if ``relation_ids[j] == relation_ids[i]`` (give it
          for relation-conditioned features, where ``j``'s target view was embedded under
          ``j``'s relation); neg_image, neg_text ``(P, M, E)`` or None: explicit negatives
          of each row embedded under its own relation, appended to the row's candidates
          (forward direction of every term); neg_image_valid, neg_valid ``(P, M)`` bool.
        - **output:** total loss (scalar) and a dict of detached per-term scalars
          (``i2t``, ``t2i``, ``inter`` and/or ``i2i``, ``t2t``, ``intra``; zero-weight terms
          are not computed).
    """

    def __init__(self, w_inter: float = 1.0, w_intra: float = 1.0, mask_false_negatives: bool = True) -> None:
        super().__init__()
        if w_inter < 0 or w_intra < 0 or w_inter + w_intra == 0:
            raise ValueError(
                f"loss weights must be non-negative and not both zero; got w_inter={w_inter}, "
                f"w_intra={w_intra}"
            )
        self.w_inter = w_inter
        self.w_intra = w_intra
        self.mask_false_negatives = mask_false_negatives
        self._stacked_terms = _stacked_symmetric_info_nce

    def compile_terms(self, **options: object) -> "RCMLLoss":
        """Run the stacked terms through :func:`torch.compile` (``dynamic=True``: the number of
        pairs changes every step); the masking, logsumexp and reductions over ``(T, P, P)``
        then fuse into a few kernels. Same values (tested on CPU); ``options`` go to
        :func:`torch.compile`. Returns ``self``."""
        self._stacked_terms = torch.compile(_stacked_symmetric_info_nce, dynamic=True, **options)
        return self

    def forward(
        self,
        src_image: Tensor,
        src_text: Tensor,
        dst_image: Tensor,
        dst_text: Tensor,
        logit_scale: Tensor | float,
        src_key: Tensor | None = None,
        dst_key: Tensor | None = None,
        src_image_valid: Tensor | None = None,
        dst_image_valid: Tensor | None = None,
        false_negatives: Tensor | None = None,
        relation_ids: Tensor | None = None,
        neg_image: Tensor | None = None,
        neg_text: Tensor | None = None,
        neg_image_valid: Tensor | None = None,
        neg_valid: Tensor | None = None,
        global_false_negatives: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        num_pairs = src_image.shape[0]
        world = world_size()
        mask_pairs = num_pairs * world if global_false_negatives else num_pairs
        if (neg_image is None) != (neg_text is None):
            raise ValueError("give both neg_image and neg_text, or neither")
        if neg_image is not None and (neg_image.dim() != 3 or neg_image.shape[0] != num_pairs):
            raise ValueError(f"neg_image must be (P={num_pairs}, M, E); got {tuple(neg_image.shape)}")
        if neg_image is not None:
            if neg_valid is None:
                neg_valid = torch.ones(neg_image.shape[:2], dtype=torch.bool, device=neg_image.device)
            if neg_image_valid is None:
                neg_image_valid = neg_valid
        if not (src_text.shape[0] == dst_image.shape[0] == dst_text.shape[0] == num_pairs):
            raise ValueError(
                f"all four feature tensors need the same number of pairs; got {src_image.shape[0]}, "
                f"{src_text.shape[0]}, {dst_image.shape[0]}, {dst_text.shape[0]}"
            )
        if (src_key is None) != (dst_key is None):
            raise ValueError("give both src_key and dst_key, or neither")
        if false_negatives is not None and false_negatives.shape != (mask_pairs, mask_pairs):
            raise ValueError(
                f"false_negatives must be ({mask_pairs}, {mask_pairs}) (global_false_negatives="
                f"{global_false_negatives}, world size {world}); got {tuple(false_negatives.shape)}"
            )
        device = src_image.device
        if src_image_valid is None:
            src_image_valid = torch.ones(num_pairs, dtype=torch.bool, device=device)
        if dst_image_valid is None:
            dst_image_valid = torch.ones(num_pairs, dtype=torch.bool, device=device)

        if world > 1:
            src_image, src_text, dst_image, dst_text = (
                gather_with_grad(t) for t in (src_image, src_text, dst_image, dst_text)
            )
            src_image_valid = gather_no_grad(src_image_valid)
            dst_image_valid = gather_no_grad(dst_image_valid)
            if src_key is not None and dst_key is not None:
                src_key, dst_key = gather_no_grad(src_key), gather_no_grad(dst_key)
            if false_negatives is not None and not global_false_negatives:
                blocks = gather_no_grad(false_negatives).view(-1, num_pairs, num_pairs)  # (W, P, P)
                false_negatives = torch.block_diag(*blocks.unbind(0))  # (W P, W P)
            if relation_ids is not None:
                relation_ids = gather_no_grad(relation_ids)
            if neg_image is not None and neg_text is not None:
                neg_image, neg_text = gather_with_grad(neg_image), gather_with_grad(neg_text)
                neg_valid = gather_no_grad(neg_valid)
                neg_image_valid = gather_no_grad(neg_image_valid)

        fn_mask = None
        if self.mask_false_negatives:
            if src_key is not None and dst_key is not None:
                fn_mask = false_negative_mask(src_key, dst_key)  # (P, P)
            if false_negatives is not None:
                fn_mask = false_negatives.bool() if fn_mask is None else fn_mask | false_negatives.bool()
        if relation_ids is not None:
            # Candidates embedded under another relation are not comparable with the anchor's
            # view (and would let the model match relations instead of products): leave them out.
            cross = relation_ids[:, None] != relation_ids[None, :]
            fn_mask = cross if fn_mask is None else fn_mask | cross

        terms: dict[str, Tensor] = {}
        # Under DDP the features now hold the global batch.
        always = torch.ones(src_image.shape[0], dtype=torch.bool, device=device)
        # (name, anchors, candidates, anchor valid, candidate valid, negatives, negative valid)
        specs = []
        if self.w_inter > 0:
            specs += [("i2t", src_image, dst_text, src_image_valid, always, neg_text, neg_valid),
                      ("t2i", src_text, dst_image, always, dst_image_valid, neg_image, neg_image_valid)]
        if self.w_intra > 0:
            specs += [("i2i", src_image, dst_image, src_image_valid, dst_image_valid, neg_image, neg_image_valid),
                      ("t2t", src_text, dst_text, always, always, neg_text, neg_valid)]
        names, anchors, candidates, anchor_valid, candidate_valid, negatives, negative_valid = zip(*specs)
        with_negatives = neg_image is not None
        values = self._stacked_terms(
            torch.stack(anchors), torch.stack(candidates), logit_scale, fn_mask,  # (T, P, E) each
            torch.stack(anchor_valid).bool(), torch.stack(candidate_valid).bool(),  # (T, P) each
            torch.stack(negatives) if with_negatives else None,  # (T, P, M, E)
            torch.stack(negative_valid).bool() if with_negatives else None,  # (T, P, M)
        )  # (T,)
        value = dict(zip(names, values.unbind(0)))
        total = src_image.new_zeros(())
        if self.w_inter > 0:
            inter = (value["i2t"] + value["t2i"]) / 2
            total = total + self.w_inter * inter
            terms.update(i2t=value["i2t"].detach(), t2i=value["t2i"].detach(), inter=inter.detach())
        if self.w_intra > 0:
            intra = (value["i2i"] + value["t2t"]) / 2
            total = total + self.w_intra * intra
            terms.update(i2i=value["i2i"].detach(), t2t=value["t2t"].detach(), intra=intra.detach())
        return total, terms
