import math
from datetime import timedelta
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.distributed as dist
import torch.multiprocessing as mp

from rcml_graph import losses
from rcml_graph.losses import RCMLLoss, contrastive_logits, false_negative_mask, info_nce, view_keys

E = math.e
# A = [[1, 0], [0, 1]], B = [[1, 0], [0.6, 0.8]] (unit rows); with logit scale 2:
# A @ B.T * 2 = [[2, 1.2], [0, 1.6]], A @ A.T * 2 = 2 I, B @ B.T * 2 = [[2, 1.2], [1.2, 2]].
A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
SCALE = torch.tensor(2.0)

# Symmetric CE of S = [[2, 1.2], [0, 1.6]]: rows, then columns (= rows of S.T).
ROW_0 = math.log(E**2 + E**1.2) - 2
ROW_1 = math.log(E**0 + E**1.6) - 1.6
COL_0 = math.log(E**2 + E**0) - 2
COL_1 = math.log(E**1.2 + E**1.6) - 1.6
SYM_AB = ((ROW_0 + ROW_1) / 2 + (COL_0 + COL_1) / 2) / 2
SYM_AA = math.log(E**2 + 1) - 2  # S = 2 I: every row and column alike
SYM_BB = math.log(E**2 + E**1.2) - 2  # S = [[2, 1.2], [1.2, 2]]


def test_contrastive_logits_known_values() -> None:
    torch.testing.assert_close(contrastive_logits(A, B, SCALE), torch.tensor([[2.0, 1.2], [0.0, 1.6]]))
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(2, 3\)"):
        contrastive_logits(A, torch.zeros(2, 3), SCALE)


def test_info_nce_diagonal_known_value() -> None:
    logits = torch.tensor([[2.0, 1.2], [0.0, 1.6]])
    torch.testing.assert_close(info_nce(logits), torch.tensor((ROW_0 + ROW_1) / 2))
    torch.testing.assert_close(info_nce(logits, torch.tensor([0, 1])), torch.tensor((ROW_0 + ROW_1) / 2))


def test_info_nce_masked_false_negative_known_value() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.0, 1.0], [0.0, 1.0, 4.0]])
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    unmasked = [
        math.log(E**3 + E**1 + E**0) - 3,
        math.log(E**2 + E**2 + E**1) - 2,
        math.log(E**0 + E**1 + E**4) - 4,
    ]
    masked = [math.log(E**3 + E**0) - 3, math.log(E**2 + E**1) - 2, unmasked[2]]
    torch.testing.assert_close(info_nce(logits), torch.tensor(sum(unmasked) / 3))
    torch.testing.assert_close(info_nce(logits, None, mask), torch.tensor(sum(masked) / 3))
    # Masking removes exactly e^1 from row 0's and e^2 from row 1's denominator.
    delta = (math.log(E**3 + E**0) - math.log(E**3 + E + 1) + math.log(E**2 + E) - math.log(2 * E**2 + E)) / 3
    torch.testing.assert_close(info_nce(logits, None, mask) - info_nce(logits), torch.tensor(delta))


def test_info_nce_never_masks_the_positive_and_supports_multi_positive() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    everything = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(info_nce(logits, torch.tensor([1]), everything), torch.tensor(0.0))
    positives = torch.tensor([[True, True, False]])
    expected = math.log(E + E**2 + 1) - math.log(E + E**2)
    torch.testing.assert_close(info_nce(logits, positives), torch.tensor(expected))


def test_info_nce_invalid_rows_and_columns() -> None:
    logits = torch.tensor([[2.0, 1.2], [0.0, 1.6]], requires_grad=True)
    # Row 1 dropped; column 1 excluded -> row 0 has only its positive: loss 0.
    value = info_nce(logits, None, None, torch.tensor([True, False]), torch.tensor([True, False]))
    assert value.item() == 0.0
    value = info_nce(logits, None, None, torch.tensor([False, False]))
    value.backward()
    assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros(2, 2))


def test_false_negative_mask_from_view_keys() -> None:
    src = view_keys(torch.tensor([5, 5, 7]), torch.tensor([1, 1, 1]), num_relations=4)
    dst = view_keys(torch.tensor([8, 9, 9]), torch.tensor([1, 1, 2]), num_relations=4)
    assert src.tolist() == [21, 21, 29]
    expected = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    assert torch.equal(false_negative_mask(src, dst), expected)


def test_rcml_loss_hand_computed_terms_and_weights() -> None:
    # src_image = A, dst_text = B, src_text = B, dst_image = A:
    # i2t: S = A B^T; t2i: S = B A^T = (A B^T)^T (same symmetric loss); i2i: A A^T; t2t: B B^T.
    loss_fn = RCMLLoss(w_inter=0.5, w_intra=2.0)
    total, terms = loss_fn(A, B, A, B, SCALE)
    torch.testing.assert_close(terms["i2t"], torch.tensor(SYM_AB))
    torch.testing.assert_close(terms["t2i"], torch.tensor(SYM_AB))
    torch.testing.assert_close(terms["i2i"], torch.tensor(SYM_AA))
    torch.testing.assert_close(terms["t2t"], torch.tensor(SYM_BB))
    torch.testing.assert_close(total, torch.tensor(0.5 * SYM_AB + 2.0 * (SYM_AA + SYM_BB) / 2))


def test_self_pairs_inter_only_is_the_clip_loss() -> None:
    # Self pairs: src == dst. CLIP: (CE(s I T^T) + CE(s T I^T)) / 2 = SYM_AB for I = A, T = B.
    total, terms = RCMLLoss(w_inter=1.0, w_intra=0.0)(A, B, A, B, SCALE)
    torch.testing.assert_close(total, torch.tensor(SYM_AB))
    assert set(terms) == {"i2t", "t2i", "inter"}


def test_rcml_loss_masks_pairs_sharing_a_source_view() -> None:
    # Two pairs from the same source view to different targets: S = [[1, 0], [1, 0]].
    src = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    dst = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss_fn = RCMLLoss(w_inter=1.0, w_intra=0.0)
    keys_src, keys_dst = torch.tensor([3, 3]), torch.tensor([4, 5])
    masked, _ = loss_fn(src, src, dst, dst, 1.0, keys_src, keys_dst)
    unmasked, _ = loss_fn(src, src, dst, dst, 1.0)
    rows = (math.log(E + 1) - 1 + math.log(E + 1) - 0) / 2
    cols = (math.log(2 * E) - 1 + math.log(2) - 0) / 2
    torch.testing.assert_close(unmasked, torch.tensor((rows + cols) / 2))
    torch.testing.assert_close(masked, torch.tensor(0.0))  # each row keeps only its positive


def test_explicit_false_negative_mask_acts_like_view_keys() -> None:
    src = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    dst = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss_fn = RCMLLoss(w_inter=1.0, w_intra=0.0)
    explicit = torch.tensor([[True, True], [True, True]])  # the sampler's mask includes (i, i)
    by_mask, _ = loss_fn(src, src, dst, dst, 1.0, false_negatives=explicit)
    torch.testing.assert_close(by_mask, torch.tensor(0.0))
    ignored, _ = RCMLLoss(w_inter=1.0, w_intra=0.0, mask_false_negatives=False)(
        src, src, dst, dst, 1.0, false_negatives=explicit
    )
    assert ignored.item() > 0.5
    with pytest.raises(ValueError, match=r"false_negatives must be \(2, 2\)"):
        loss_fn(src, src, dst, dst, 1.0, false_negatives=explicit[:1])


def test_rcml_loss_drops_missing_images() -> None:
    # Source image 1 missing. i2t rows: only row 0 -> ROW_0. i2t columns (text anchors over
    # source images): image 1 is no candidate, so text 0 has only its positive (0) and text 1's
    # positive is gone (dropped) -> 0. i2t = (ROW_0 + 0) / 2.
    _, terms = RCMLLoss(w_inter=1.0, w_intra=0.0)(
        A, B, A, B, SCALE, src_image_valid=torch.tensor([True, False])
    )
    torch.testing.assert_close(terms["i2t"], torch.tensor(ROW_0 / 2))
    torch.testing.assert_close(terms["t2i"], torch.tensor(SYM_AB))  # destination images all valid


def test_rcml_loss_bad_arguments() -> None:
    with pytest.raises(ValueError, match="w_inter=0"):
        RCMLLoss(w_inter=0.0, w_intra=0.0)
    with pytest.raises(ValueError, match="src_key and dst_key"):
        RCMLLoss()(A, B, A, B, SCALE, src_key=torch.tensor([0, 1]))


# DDP: two gloo ranks, each with half of a 4-pair batch, against one process on all of it.

def _batch() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    feats = [torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=-1) for _ in range(4)]
    src_key = torch.tensor([0, 0, 1, 2])  # pairs 0 and 1 (both on rank 0) share a source view
    dst_key = torch.tensor([5, 6, 5, 7])  # pairs 0 and 2 (on ranks 0 and 1) share a target view
    image_valid = torch.tensor([True, True, False, True])
    explicit = torch.zeros(4, 4, dtype=torch.bool)
    explicit[2, 3] = True  # inside rank 1's block: (0, 1) of its local mask
    return (*feats, src_key, dst_key, image_valid, explicit)


def _loss_and_grads(features: list[torch.Tensor], src_key, dst_key, image_valid, explicit):
    leaves = [f.clone().requires_grad_(True) for f in features]
    loss, _ = RCMLLoss(w_inter=1.0, w_intra=0.5)(
        *leaves, torch.tensor(3.0), src_key, dst_key, image_valid, torch.ones_like(image_valid), explicit
    )
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


def _ddp_worker(rank: int, port: int, out_dir: str, legacy_gather: bool) -> None:
    if legacy_gather:  # the torch < 2.14 path (and CPU's): distributed.nn.functional.all_gather
        losses._all_gather_single_autograd = None
    else:  # the functional collective, which CUDA tensors use
        losses.FUNCTIONAL_GATHER_ON_CPU = True
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=30)
    )
    try:
        *features, src_key, dst_key, image_valid, explicit = _batch()
        part = slice(2 * rank, 2 * rank + 2)
        local = [f[part] for f in features]
        loss, grads = _loss_and_grads(local, src_key[part], dst_key[part], image_valid[part], explicit[part, part])
        torch.save({"loss": loss, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.filterwarnings("ignore:torch.distributed.nn.functional.all_gather is deprecated:FutureWarning")
@pytest.mark.parametrize("legacy_gather", [False, True])
def test_ddp_gather_matches_single_process(tmp_path: Path, legacy_gather: bool) -> None:
    # fork, not spawn: the workers need not re-import torch (~10 s each on a loaded machine).
    mp.start_processes(
        _ddp_worker, args=(_free_port(), str(tmp_path), legacy_gather), nprocs=2, start_method="fork"
    )
    *features, src_key, dst_key, image_valid, explicit = _batch()
    loss, grads = _loss_and_grads(features, src_key, dst_key, image_valid, explicit)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], loss)
        # Every rank computes the global loss; all_gather's backward sums the ranks'
        # gradients, so each rank holds world_size x its slice (DDP's mean restores it).
        for rank_grad, full_grad in zip(result["grads"], grads):
            torch.testing.assert_close(rank_grad, 2 * full_grad[2 * rank : 2 * rank + 2])


def test_relation_ids_drop_cross_relation_candidates_known_value() -> None:
    # Two pairs under different relations: each row keeps only its own positive, in both
    # directions, so every term is log(e^s / e^s) = 0.
    loss = RCMLLoss(w_inter=1.0, w_intra=1.0)
    total, terms = loss(A, A, B, B, SCALE, relation_ids=torch.tensor([3, 5]))
    torch.testing.assert_close(total, torch.tensor(0.0))
    # Same relation: the plain symmetric loss.
    total_same, _ = loss(A, A, B, B, SCALE, relation_ids=torch.tensor([3, 3]))
    torch.testing.assert_close(total_same, torch.tensor(2 * SYM_AB))  # inter + intra, all four terms SYM_AB


def test_explicit_negatives_join_the_forward_rows_known_value() -> None:
    # One pair, one explicit negative N = [0, 1] for each modality, scale 2:
    # a = [1, 0], b = [0.6, 0.8]: positive logit 1.2, negative logit a.N * 2 = 0.
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8]])
    neg = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # (P=1, M=2, E=2)
    valid = torch.tensor([[True, False]])  # the second column is padding
    loss = RCMLLoss(w_inter=1.0, w_intra=0.0)
    total, terms = loss(a, a, b, b, SCALE, neg_image=neg, neg_text=neg, neg_valid=valid)
    forward = math.log(E**1.2 + E**0) - 1.2  # the padding column (logit 2) is left out
    backward = 0.0  # the column direction has a single candidate
    torch.testing.assert_close(terms["i2t"], torch.tensor((forward + backward) / 2))
    torch.testing.assert_close(total, torch.tensor((forward + backward) / 2))
    with pytest.raises(ValueError, match="neg_image must be"):
        loss(a, a, b, b, SCALE, neg_image=neg[0], neg_text=neg[0])


@pytest.mark.parametrize("seed", range(4))
def test_single_positive_path_equals_bool_positive_path(seed):
    """Index targets take a shorter path; value and gradient equal the general (bool) path,
    with false negatives, invalid rows and invalid columns (some positives invalid)."""
    g = torch.Generator().manual_seed(seed)
    for trial in range(40):
        n = int(torch.randint(1, 9, (), generator=g))
        m = n + int(torch.randint(0, 5, (), generator=g))
        logits = (torch.randn(n, m, generator=g) * 3).requires_grad_()
        targets = torch.randint(0, m, (n,), generator=g) if trial % 3 else torch.arange(n)
        fn = torch.rand(n, m, generator=g) < 0.3 if trial % 2 else None
        rows = torch.rand(n, generator=g) < 0.8 if trial % 4 else None
        cols = torch.rand(m, generator=g) < 0.85 if trial % 5 else None
        fast = info_nce(logits, targets, fn, rows, cols)
        (fast_grad,) = torch.autograd.grad(fast, logits)
        positive = torch.zeros(n, m, dtype=torch.bool)
        positive[torch.arange(n), targets] = True
        general = info_nce(logits, positive, fn, rows, cols)
        (general_grad,) = torch.autograd.grad(general, logits)
        assert torch.isfinite(fast) and torch.isfinite(fast_grad).all()
        torch.testing.assert_close(fast, general)
        torch.testing.assert_close(fast_grad, general_grad)


def _per_term_reference(a, b, scale, fn, a_valid, b_valid, extra=None, extra_valid=None):
    """One term's symmetric loss from :func:`info_nce` calls (the definition in the module
    docstring): forward rows with the explicit negatives appended, then the transposed logits."""
    logits = contrastive_logits(a, b, scale)  # (P, P)
    num_pairs = a.shape[0]
    fn = torch.zeros(num_pairs, num_pairs, dtype=torch.bool) if fn is None else fn
    backward = info_nce(logits.T, None, fn.T, b_valid, a_valid)
    if extra is None:
        return (info_nce(logits, None, fn, a_valid, b_valid) + backward) / 2
    extra_logits = scale * torch.einsum("pe,pme->pm", a, extra)
    forward = info_nce(
        torch.cat([logits, extra_logits], dim=1), torch.arange(num_pairs), torch.cat([fn, ~extra_valid], dim=1),
        a_valid, torch.cat([b_valid, torch.ones(extra.shape[1], dtype=torch.bool)]),
    )
    return (forward + backward) / 2


@pytest.mark.parametrize("seed", range(3))
def test_stacked_terms_equal_per_term_info_nce(seed):
    """RCMLLoss computes its four terms stacked, in one batched matmul; each term's value and
    every feature's gradient equal the per-term composition of info_nce calls, with false
    negatives, invalid images on either side, explicit negatives with padding (whole padded
    rows included) and relation-restricted candidates."""
    g = torch.Generator().manual_seed(seed)
    for trial in range(30):
        p, m, e = int(torch.randint(1, 9, (), generator=g)), int(torch.randint(0, 4, (), generator=g)), 5
        def feats(*shape):
            return torch.nn.functional.normalize(torch.randn(*shape, e, generator=g), dim=-1).requires_grad_()
        si, st, di, dt = feats(p), feats(p), feats(p), feats(p)
        siv, div = torch.rand(p, generator=g) < 0.7, torch.rand(p, generator=g) < 0.7
        fn = torch.rand(p, p, generator=g) < 0.3 if trial % 2 else None
        relation = torch.randint(0, 3, (p,), generator=g) if trial % 3 == 0 else None
        leaves = [si, st, di, dt]
        kwargs = {}
        if m:
            ni, nt = feats(p, m), feats(p, m)
            nv = torch.rand(p, m, generator=g) < 0.7
            nv[0] = False  # a row with padding only
            niv = nv & (torch.rand(p, m, generator=g) < 0.8)
            leaves += [ni, nt]
            kwargs = dict(neg_image=ni, neg_text=nt, neg_valid=nv, neg_image_valid=niv)
        scale = torch.tensor(float(torch.rand((), generator=g) * 20 + 1))
        loss = RCMLLoss(w_inter=1.0, w_intra=0.7)
        total, terms = loss(si, st, di, dt, scale, src_image_valid=siv, dst_image_valid=div, false_negatives=fn,
                            relation_ids=relation, **kwargs)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)

        mask = fn
        if relation is not None:
            cross = relation[:, None] != relation[None, :]
            mask = cross if mask is None else mask | cross
        ones = torch.ones(p, dtype=torch.bool)
        neg = (lambda x, v: (x, v)) if m else (lambda x, v: (None, None))
        expected = {
            "i2t": _per_term_reference(si, dt, scale, mask, siv, ones, *neg(m and nt, m and nv)),
            "t2i": _per_term_reference(st, di, scale, mask, ones, div, *neg(m and ni, m and niv)),
            "i2i": _per_term_reference(si, di, scale, mask, siv, div, *neg(m and ni, m and niv)),
            "t2t": _per_term_reference(st, dt, scale, mask, ones, ones, *neg(m and nt, m and nv)),
        }
        reference = (expected["i2t"] + expected["t2i"]) / 2 + 0.7 * (expected["i2i"] + expected["t2t"]) / 2
        reference_grads = torch.autograd.grad(reference, leaves, allow_unused=True)
        for name, value in expected.items():
            torch.testing.assert_close(terms[name], value.detach(), msg=f"trial {trial}, term {name}")
        torch.testing.assert_close(total, reference)
        for got, want in zip(grads, reference_grads):
            got = torch.zeros_like(want) if got is None and want is not None else got
            want = torch.zeros_like(got) if want is None and got is not None else want
            if got is not None:
                assert torch.isfinite(got).all()
                torch.testing.assert_close(got, want)


def test_logsumexp_runs_in_float32_under_cpu_autocast() -> None:
    """CUDA autocast computes logsumexp in float32 and CPU autocast would keep bf16; the loss
    casts explicitly, so a CPU bf16 (train.amp_cpu) loss is float32 and close to the float32 one."""
    from rcml_graph.losses import _stacked_symmetric_info_nce

    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(2, 6, 4), dim=-1), F.normalize(torch.randn(2, 6, 4), dim=-1)
    extra = F.normalize(torch.randn(2, 6, 3, 4), dim=-1)
    valid = torch.ones(2, 6, dtype=torch.bool)
    logits = torch.randn(6, 6) * 5
    reference = (_stacked_symmetric_info_nce(a, b, 20.0, None, valid, valid, extra, torch.ones(2, 6, 3, dtype=torch.bool)),
                 info_nce(logits), info_nce(logits, torch.eye(6, dtype=torch.bool)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lowered = (_stacked_symmetric_info_nce(a, b, 20.0, None, valid, valid, extra, torch.ones(2, 6, 3, dtype=torch.bool)),
                   info_nce(logits.bfloat16()), info_nce(logits.bfloat16(), torch.eye(6, dtype=torch.bool)))
    for low, ref in zip(lowered, reference):
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, ref, rtol=0.02, atol=0.02)
