"""Token-feature cache internals; the public API is re-exported by :mod:`rcml_graph.feature_cache`."""
