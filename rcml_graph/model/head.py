"""The RCML head: relation-conditioned image and text embeddings of (product, relation) views.

Formulation (our reading of RCML, arXiv 2508.17497; the paper's exact equations were not
available offline, so this is a documented choice). For a view ``(p, r)`` and modality
``m`` in {image, text}::

    a_m = CrossAttn_m(query = e_r, keys/values = tokens_m(p))          # (D,)
    h_m = beta * g_m(p) + (1 - beta) * a_m                            # (D,)
    z_m = normalize(Proj_m(h_m))                                     # (out_dim,)

where ``e_r`` is the relation embedding (text tower of the description, or a learned id),
``g_m(p)`` the backbone's global embedding and ``Proj_m`` the modality's projection head.
With a linear head this is ``normalize(beta * Proj(g) + (1 - beta) * Proj(a))``. ``beta = 1``
gives ``normalize(Proj_m(g_m(p)))`` exactly, with no dependence on the relation: CLIP.

Query side: with ``query_operator`` the *source* view of a relation pair goes through
:class:`~rcml_graph.model.query_operator.QueryOperator` (``q = normalize(z + MLP([z; e_r]))``),
so the score ``q(s, r) . z(t, r)`` is no longer symmetric: a relation can map a product to a
different kind of product, not only to look-alikes (see that module for the measurement that
motivated it). Targets and negatives are never transformed; ``encode_views(..., as_query=True)``
gives the query side at evaluation time.

Missing images: a product with ``has_image = False`` has no image tokens. Its image output
falls back to the same view's text embedding (finite, usable for retrieval) and is flagged
``image_valid = False``; :class:`rcml_graph.losses.RCMLLoss` leaves such rows out of every
image term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rcml_graph.model.attention import RelationCrossAttention
from rcml_graph.model.features import ProductFeatures
from rcml_graph.model.projection import ProjectionHead
from rcml_graph.model.query_operator import QueryOperator
from rcml_graph.model.relation_encoder import RelationEncoder


def _rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for a sorted unique ``index``; no copy when it takes every row.

    In a training step every product of the batch is in some view, so the token tables (the
    largest tensors of the step) would otherwise be copied whole.
    """
    return table if index.numel() == table.shape[0] else table[index]


@dataclass
class ViewEmbeddings:
    """L2-normalised embeddings of ``V`` (product, relation) views.

    Attributes:
        image: ``(V, out_dim)`` relation-conditioned image embedding.
        text: ``(V, out_dim)`` relation-conditioned text embedding.
        image_valid: ``(V,)`` bool, False where the product has no image (``image`` then holds
            the text embedding).
    """

    image: Tensor
    text: Tensor
    image_valid: Tensor


@dataclass
class PairEmbeddings:
    """Embeddings of the source and target views of ``P`` pairs, and the temperature.

    Attributes:
        src_image, src_text, dst_image, dst_text: ``(P, out_dim)``, L2-normalised.
        src_image_valid, dst_image_valid: ``(P,)`` bool image validity.
        logit_scale: scalar tensor, ``exp`` of the learnable log-scale, clamped.
        neg_image, neg_text: ``(P, M, out_dim)`` explicit negatives of each pair, embedded
            under the pair's own relation (None when no ``negative_index`` was given).
        neg_image_valid: ``(P, M)`` bool image validity of the negatives.
        neg_valid: ``(P, M)`` bool, False for padding columns (``negative_index == -1``).
        global_src_image, global_src_text, global_dst_image, global_dst_text: ``(P, out_dim)``
            relation-free views (the ``beta = 1`` path through the same projections), when
            ``with_global`` was asked for; None otherwise.
    """

    src_image: Tensor
    src_text: Tensor
    dst_image: Tensor
    dst_text: Tensor
    src_image_valid: Tensor
    dst_image_valid: Tensor
    logit_scale: Tensor
    neg_image: Tensor | None = None
    neg_text: Tensor | None = None
    neg_image_valid: Tensor | None = None
    neg_valid: Tensor | None = None
    global_src_image: Tensor | None = None
    global_src_text: Tensor | None = None
    global_dst_image: Tensor | None = None
    global_dst_text: Tensor | None = None


class RCMLHead(nn.Module):
    r"""Relation-conditioned encoder on top of a CLIP-like backbone's outputs.

    Views are deduplicated with :func:`torch.unique` on ``(product, relation)`` before the
    cross-attention runs, so a view shared by several pairs is attended once; products are
    encoded once per step by the backbone (see :class:`ProductFeatures`) and their attention
    keys/values once per step by the head, whatever the number of relations they appear with.

    Args:
        embed_dim (int): size ``D`` of the backbone's global embeddings (and of the
            description embeddings).
        image_token_dim (int): size of the image tokens.
        text_token_dim (int): size of the text tokens.
        out_dim (int, optional): contrastive embedding size; None means ``embed_dim``.
            (default: None)
        d_model (int, optional): cross-attention width. (default: 256)
        num_heads (int, optional): cross-attention heads. (default: 4)
        dropout (float, optional): attention dropout. (default: 0.0)
        beta (float, optional): weight of the global embedding in ``[0, 1]``; 1 is CLIP.
            (default: 0.5)
        learn_beta (bool, optional): learn ``beta = sigmoid(b)`` initialised at ``beta``, which
            must then lie in ``(0, 1)``. (default: False)
        projection (str, optional): ``linear``, ``mlp`` or ``identity``. (default: ``linear``)
        projection_hidden_dim (int, optional): MLP hidden size. (default: None)
        relation_mode (str, optional): ``description``, ``ids`` or ``none``; ``none`` needs
            ``beta = 1``. (default: ``description``)
        num_relations (int, optional): number of relation ids, for ``ids``. (default: None)
        logit_scale_init (float, optional): initial log logit scale. (default: ``log(1/0.07)``)
        logit_scale_max (float, optional): clamp of the logit scale. (default: 100.0)
        zero_init_attention (bool, optional): initialise the attention output projections at
            zero, so training starts from the unconditioned model. (default: True)
        query_operator (bool, optional): transform source (query) views with a zero-initialised
            :class:`QueryOperator`; in a global-only head it cannot read the relation (its
            relation input is zero): a relation-free query map. (default: False)

    Shapes:
        - **input:** products (:class:`ProductFeatures` of ``N`` products),
          src_index ``(P,)``, dst_index ``(P,)`` and relation_index ``(P,)`` long,
          description_table ``(R, D)`` or None, negative_index ``(P, M)`` long or None
          (rows of ``products``, -1 for none): negatives of pair ``i``, embedded under
          ``relation_index[i]``, i.e. scored under the anchor's relation as at test time.
        - **output:** :class:`PairEmbeddings` with ``(P, out_dim)`` embeddings.
    """

    def __init__(
        self,
        embed_dim: int,
        image_token_dim: int,
        text_token_dim: int,
        out_dim: int | None = None,
        d_model: int = 256,
        num_heads: int = 4,
        dropout: float = 0.0,
        beta: float = 0.5,
        learn_beta: bool = False,
        projection: str = "linear",
        projection_hidden_dim: int | None = None,
        relation_mode: str = "description",
        num_relations: int | None = None,
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
        zero_init_attention: bool = True,
        query_operator: bool = False,
    ) -> None:
        super().__init__()
        out_dim = out_dim or embed_dim
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta={beta} must lie in [0, 1]")
        if learn_beta and not 0.0 < beta < 1.0:
            raise ValueError(f"learn_beta needs an initial beta in (0, 1); got beta={beta}")
        if relation_mode == "none" and (beta != 1.0 or learn_beta):
            raise ValueError(
                f"relation_mode 'none' has nothing to condition on and needs beta=1 and "
                f"learn_beta=False; got beta={beta}, learn_beta={learn_beta}"
            )
        if logit_scale_max <= 0:
            raise ValueError(f"logit_scale_max={logit_scale_max} must be positive")
        self.learn_beta = learn_beta
        self.global_only = relation_mode == "none" or (beta == 1.0 and not learn_beta)
        if learn_beta:
            self.beta_logit = nn.Parameter(torch.tensor(math.log(beta / (1.0 - beta))))
        else:
            self.register_buffer("fixed_beta", torch.tensor(float(beta)))
        # A global-only head never looks at the relation: keep no unused (DDP-unfriendly) parameters.
        self.relation_encoder = RelationEncoder(
            "none" if self.global_only else relation_mode, embed_dim, num_relations
        )
        if self.global_only:
            self.image_attention: RelationCrossAttention | None = None
            self.text_attention: RelationCrossAttention | None = None
        else:
            self.image_attention = RelationCrossAttention(
                embed_dim, image_token_dim, embed_dim, d_model, num_heads, dropout
            )
            self.text_attention = RelationCrossAttention(
                embed_dim, text_token_dim, embed_dim, d_model, num_heads, dropout
            )
            if zero_init_attention:
                # The relation branch starts as a no-op: the head begins as the unconditioned
                # model (a = 0, h = beta * g) and learns what the relation adds. A random
                # branch would first drown half of the global embedding in noise.
                for attention in (self.image_attention, self.text_attention):
                    nn.init.zeros_(attention.out_proj.weight)
                    nn.init.zeros_(attention.out_proj.bias)
        self.image_projection = ProjectionHead(embed_dim, out_dim, projection, projection_hidden_dim)
        self.text_projection = ProjectionHead(embed_dim, out_dim, projection, projection_hidden_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.log_logit_scale_max = math.log(logit_scale_max)
        # Built last, so that the other weights of a seeded head do not depend on it.
        self.image_query: QueryOperator | None = None
        self.text_query: QueryOperator | None = None
        if query_operator:
            # A global-only head gets a relation-free map (its relation input is zero).
            self.image_query = QueryOperator(out_dim, embed_dim)
            self.text_query = QueryOperator(out_dim, embed_dim)

    @property
    def beta(self) -> Tensor:
        """The current blend weight of the global embedding, a scalar tensor."""
        if self.learn_beta:
            return torch.sigmoid(self.beta_logit)
        return self.fixed_beta

    def logit_scale(self) -> Tensor:
        """``exp(log_logit_scale)`` clamped at ``logit_scale_max`` (no gradient past the clamp)."""
        return self.log_logit_scale.clamp(max=self.log_logit_scale_max).exp()

    def cache_descriptions(self, description_table: Tensor) -> None:
        """Cache ``(R, D)`` description embeddings of a frozen text tower."""
        self.relation_encoder.cache_descriptions(description_table)

    def encode_views(
        self,
        products: ProductFeatures,
        product_index: Tensor,
        relation_index: Tensor,
        description_table: Tensor | None = None,
        as_query: bool = False,
    ) -> ViewEmbeddings:
        """Embed the views ``(product_index[v], relation_index[v])``; see :class:`ViewEmbeddings`.

        ``as_query``: embed them as the source side of a query (through the query operator,
        when the head has one); targets and candidates use the default.
        """
        if product_index.shape != relation_index.shape or product_index.dim() != 1:
            raise ValueError(
                f"product_index {tuple(product_index.shape)} and relation_index "
                f"{tuple(relation_index.shape)} must be 1-D of equal length"
            )
        has_image = products.has_image.to(torch.bool)
        if self.global_only or product_index.numel() == 0:
            # The relation cannot matter: embed each product once and gather.
            image = F.normalize(self.image_projection(products.image_global), dim=-1)  # (N, E)
            text = F.normalize(self.text_projection(products.text_global), dim=-1)  # (N, E)
            image = torch.where(has_image[:, None], image, text)
            views = ViewEmbeddings(image[product_index], text[product_index], has_image[product_index])
            return self.query_views(views, relation_index, description_table) if as_query else views

        assert self.image_attention is not None and self.text_attention is not None
        num_relation_keys = relation_index.max() + 1  # tensor: no host sync
        view_key = product_index * num_relation_keys + relation_index  # (V,)
        unique_key, inverse = torch.unique(view_key, return_inverse=True)  # (U,), (V,)
        unique_product = torch.div(unique_key, num_relation_keys, rounding_mode="floor")
        unique_relation = unique_key - unique_product * num_relation_keys

        normalized = self._check_normalized(products)
        relation = self.relation_encoder(unique_relation, description_table)  # (U, D)
        # Keys/values are per product: project the tokens of the products in use once each.
        used_product, token_index = torch.unique(unique_product, return_inverse=True)  # (N_u,), (U,)
        image_attended, image_empty = self._attend_images(products, relation, used_product, token_index,
                                                          normalized)
        text_attended, _ = self.text_attention(
            relation, _rows(products.text_tokens, used_product), _rows(products.text_mask, used_product),
            token_index, normalized,
        )  # (U, D)

        beta = self.beta
        image_blend = beta * products.image_global[unique_product] + (1 - beta) * image_attended
        text_blend = beta * products.text_global[unique_product] + (1 - beta) * text_attended
        image = F.normalize(self.image_projection(image_blend), dim=-1)  # (U, E)
        text = F.normalize(self.text_projection(text_blend), dim=-1)  # (U, E)
        image_valid = has_image[unique_product] & ~image_empty  # (U,)
        image = torch.where(image_valid[:, None], image, text)
        views = ViewEmbeddings(image[inverse], text[inverse], image_valid[inverse])
        if as_query:
            views = self.query_views(views, relation_index, description_table)
        return views

    @property
    def has_query_operator(self) -> bool:
        return self.text_query is not None

    def query_views(self, views: ViewEmbeddings, relation_index: Tensor,
                    description_table: Tensor | None = None) -> ViewEmbeddings:
        """Views ``(V, E)`` under relations ``(V,)`` as the source side of a query: through the
        query operator (the identity for a head without one, and for the self relation)."""
        if self.image_query is None or self.text_query is None or relation_index.numel() == 0:
            return views
        relation = self.relation_encoder(relation_index, description_table)  # (V, D)
        if relation is None:  # global-only head: a relation-free map
            in_features = self.text_query.hidden.in_features - views.text.shape[-1]
            relation = views.text.new_zeros(views.text.shape[0], in_features)
        text = self.text_query(views.text, relation, relation_index)  # (V, E)
        image = self.image_query(views.image, relation, relation_index)  # (V, E)
        image = torch.where(views.image_valid[:, None], image, text)
        return ViewEmbeddings(image, text, views.image_valid)

    @property
    def token_norm_eps(self) -> float:
        """The eps of the attention's token layer norms (what pre-normalised tokens must use)."""
        if self.image_attention is None or self.text_attention is None:
            raise ValueError("a global-only head has no token attention (and reads no tokens)")
        return self.image_attention.token_norm.eps

    def _check_normalized(self, products: ProductFeatures) -> bool:
        """Whether ``products`` holds pre-normalised tokens, with this head's layer-norm eps."""
        eps = products.token_norm_eps
        if eps is None:
            return False
        assert self.image_attention is not None and self.text_attention is not None
        for name, attention in (("image", self.image_attention), ("text", self.text_attention)):
            if attention.token_norm.eps != eps:
                raise ValueError(f"tokens normalised with eps={eps}, but the {name} attention's token "
                                 f"layer norm has eps={attention.token_norm.eps}; accepted: raw tokens "
                                 f"(token_norm_eps=None) or tokens normalised with eps={attention.token_norm.eps}")
        return True

    def _attend_images(
        self, products: ProductFeatures, relation: Tensor, used_product: Tensor, token_index: Tensor,
        normalized: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Image cross-attention of ``U`` views, run only on products that have an image.

        A product without an image has nothing to attend to (its output is discarded), so its
        tokens are not projected at all: a text-only domain costs no image attention.
        Returns ``(U, D)`` attended (zeros where empty) and ``(U,)`` empty.
        """
        assert self.image_attention is not None
        token_mask = _rows(products.image_token_mask(), used_product)  # (N_u, L)
        has_tokens = token_mask.any(dim=1)  # (N_u,)
        if bool(has_tokens.all()):
            return self.image_attention(relation, _rows(products.image_tokens, used_product), token_mask,
                                        token_index, normalized)
        view_has = has_tokens[token_index]  # (U,)
        attended = relation.new_zeros(relation.shape[0], self.image_attention.out_proj.out_features)
        if not bool(view_has.any()):
            return attended, ~view_has
        row_of = torch.cumsum(has_tokens.long(), 0) - 1  # (N_u,) row among products with tokens
        views = torch.nonzero(view_has).flatten()  # (U_i,)
        out, _ = self.image_attention(
            relation[views],
            products.image_tokens[used_product[has_tokens]],
            token_mask[has_tokens],
            row_of[token_index[views]],
            normalized,
        )  # (U_i, D)
        # In out's dtype: under autocast the attention's output projection gives bf16 while the
        # relation rows (hence ``attended``) may be float32.
        return attended.to(out.dtype).index_put((views,), out), ~view_has

    def forward(
        self,
        products: ProductFeatures,
        src_index: Tensor,
        dst_index: Tensor,
        relation_index: Tensor,
        description_table: Tensor | None = None,
        negative_index: Tensor | None = None,
        with_global: bool = False,
    ) -> PairEmbeddings:
        if not (src_index.shape == dst_index.shape == relation_index.shape) or src_index.dim() != 1:
            raise ValueError(
                f"src_index {tuple(src_index.shape)}, dst_index {tuple(dst_index.shape)} and "
                f"relation_index {tuple(relation_index.shape)} must be 1-D of equal length"
            )
        num_pairs = src_index.shape[0]
        products_index = [src_index, dst_index]
        relations = [relation_index, relation_index]
        neg_valid = None
        if negative_index is not None:
            if negative_index.dim() != 2 or negative_index.shape[0] != num_pairs:
                raise ValueError(
                    f"negative_index must be (P, M) with P={num_pairs}; got {tuple(negative_index.shape)}"
                )
            neg_valid = negative_index >= 0  # (P, M)
            # Padding columns embed the anchor (any valid row) and are flagged invalid.
            filled = torch.where(neg_valid, negative_index, src_index[:, None])  # (P, M)
            products_index.append(filled.reshape(-1))
            relations.append(relation_index[:, None].expand_as(filled).reshape(-1))
        views = self.encode_views(
            products, torch.cat(products_index), torch.cat(relations), description_table
        )
        source = self.query_views(
            ViewEmbeddings(views.image[:num_pairs], views.text[:num_pairs], views.image_valid[:num_pairs]),
            relation_index, description_table,
        )
        out = PairEmbeddings(
            src_image=source.image,
            src_text=source.text,
            dst_image=views.image[num_pairs : 2 * num_pairs],
            dst_text=views.text[num_pairs : 2 * num_pairs],
            src_image_valid=views.image_valid[:num_pairs],
            dst_image_valid=views.image_valid[num_pairs : 2 * num_pairs],
            logit_scale=self.logit_scale(),
        )
        if with_global:
            has_image = products.has_image.to(torch.bool)
            image = F.normalize(self.image_projection(products.image_global), dim=-1)  # (N, E)
            text = F.normalize(self.text_projection(products.text_global), dim=-1)  # (N, E)
            image = torch.where(has_image[:, None], image, text)
            out.global_src_image, out.global_src_text = image[src_index], text[src_index]
            out.global_dst_image, out.global_dst_text = image[dst_index], text[dst_index]
        if negative_index is not None and neg_valid is not None:
            shape = (*negative_index.shape, -1)
            out.neg_image = views.image[2 * num_pairs :].reshape(shape)  # (P, M, E)
            out.neg_text = views.text[2 * num_pairs :].reshape(shape)  # (P, M, E)
            out.neg_image_valid = views.image_valid[2 * num_pairs :].reshape(negative_index.shape) & neg_valid
            out.neg_valid = neg_valid
        return out
