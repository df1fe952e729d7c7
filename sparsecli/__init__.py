"""sparsecli: an experiment workflow for sparse neural networks."""

__version__ = "0.1.0"
