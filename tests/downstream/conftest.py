"""Fixtures shared by the downstream tests."""

import pytest


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    from rcml_graph.data.demo import generate_demo
    from rcml_graph.data.graph import GraphSettings
    from rcml_graph.data.pipeline import build_domain

    root = tmp_path_factory.mktemp("data")
    generate_demo(root / "demo" / "raw", num_products=300, images=False)
    build_domain(root / "demo" / "raw" / "meta_Demo.json.gz", root / "demo" / "processed", GraphSettings(),
                 show_progress=False)
    return str(root)
