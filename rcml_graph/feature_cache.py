"""The token-feature cache: a frozen backbone's outputs for every product and relation text.

Build it once with :func:`build_feature_cache` (entry point: ``python -m rcml_graph.features
domain=<name> model=<preset>``), then read batches with :class:`FeatureCache`::

    cache = FeatureCache.open(cache_dir_for(data_root, "sports", "offline"), data_hash=...)
    feats = cache.product_features(torch.tensor([0, 5, 7]), device="cuda")  # ProductFeatures
    relations = cache.relation_features()  # TextTokens of every description

Layout, storage dtypes and the resume protocol: :mod:`rcml_graph.features_lib.storage` and
:mod:`rcml_graph.features_lib.builder`.
"""

from rcml_graph.features_lib.builder import build_feature_cache, cache_dir_for, feature_data_hash
from rcml_graph.features_lib.loading import IMAGE_DECODERS, product_image_paths
from rcml_graph.features_lib.reader import FeatureCache, TextTokens
from rcml_graph.features_lib.storage import MANIFEST_JSON, PROGRESS_JSON, STATS_JSON
from rcml_graph.model.features import ProductFeatures

__all__ = [
    "IMAGE_DECODERS",
    "MANIFEST_JSON",
    "PROGRESS_JSON",
    "STATS_JSON",
    "FeatureCache",
    "ProductFeatures",
    "TextTokens",
    "build_feature_cache",
    "cache_dir_for",
    "feature_data_hash",
    "product_image_paths",
]
