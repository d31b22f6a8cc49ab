"""rcml_graph: relation-conditioned multimodal representation learning on product graphs."""

__version__ = "0.1.0"
