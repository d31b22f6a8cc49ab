"""PNG plots of an evaluation run (matplotlib, Agg backend): t-SNE and Hit@5 per relation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE
from torch import Tensor

from rcml_graph.eval.results import ResultRow

__all__ = ["plot_hit_per_relation", "plot_relation_tsne"]


def plot_relation_tsne(
    embeddings: Sequence[Tensor],
    titles: Sequence[str],
    labels: Tensor,
    path: str | Path,
    seed: int = 0,
) -> Path:
    """Side-by-side t-SNE maps of the same products under different relations.

    Args:
        embeddings: One ``(P, D)`` tensor per relation (same products, same order).
        titles: Panel title per relation.
        labels: ``(P,)`` interest community per product (colour), ``-1`` for none.
        path: Output PNG.
        seed: t-SNE seed.
    """
    if len(embeddings) != len(titles) or not embeddings:
        raise ValueError(f"need one title per embedding; got {len(embeddings)} and {len(titles)}")
    num_points = embeddings[0].size(0)
    if num_points < 3:
        raise ValueError(f"t-SNE needs at least 3 products; got {num_points}")
    perplexity = float(min(30.0, (num_points - 1) / 3.0))
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5.5 * len(embeddings), 5), squeeze=False)
    colours = labels.numpy()
    for ax, emb, title in zip(axes[0], embeddings, titles):
        points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(
            emb.double().numpy()
        )
        ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab20", s=8)
        ax.set_title(title if len(title) <= 60 else title[:57] + "...", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Products conditioned on two relations, coloured by interest community")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_hit_per_relation(
    rows: Sequence[ResultRow],
    path: str | Path,
    metric: str = "hit@5",
    mode: str = "avg",
) -> Path:
    """Grouped bars of ``metric`` per relation kind and method (mean over seeds, std as error).

    Reads the ``subset = "kind=<kind>"`` rows of ``retrieval`` (random protocol) and
    ``retrieval_sensitive``; modes other than ``mode`` are ignored. When no row has an image
    mode, ``text2text`` is used.
    """
    kind_rows = [r for r in rows if str(r.extra.get("subset", "")).startswith("kind=") and r.metric == metric]
    if not any(r.mode == mode for r in kind_rows):
        mode = "text2text"
    kind_rows = [r for r in kind_rows if r.mode == mode]
    if not kind_rows:
        raise ValueError(f"no per-relation {metric!r} rows to plot")
    series: dict[tuple[str, str], dict[str, list[float]]] = {}
    kinds: list[str] = []
    for r in kind_rows:
        kind = str(r.extra["subset"]).removeprefix("kind=")
        if kind not in kinds:
            kinds.append(kind)
        series.setdefault((r.method, str(r.extra.get("protocol"))), {}).setdefault(kind, []).append(r.value)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(kinds) * max(1, len(series)) / 2), 4.5))
    width = 0.8 / len(series)
    x = np.arange(len(kinds))
    for i, ((method, protocol), values) in enumerate(series.items()):
        means = [float(np.mean(values[k])) if k in values else 0.0 for k in kinds]
        stds = [float(np.std(values[k], ddof=1)) if len(values.get(k, [])) > 1 else 0.0 for k in kinds]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, label=f"{method} ({protocol})")
    ax.set_xticks(x)
    ax.set_xticklabels(kinds, rotation=15)
    ax.set_ylabel(f"{metric} ({mode})")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(f"Relation-guided retrieval {metric} per relation type")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
