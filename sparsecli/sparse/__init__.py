"""Sparse building blocks: static weight masks and k-winners-take-all activations."""

from sparsecli.sparse.kwinners import KWinners, KWinners2d, is_kwinners, update_boost_strength
from sparsecli.sparse.weights import SparseWeights, rezero_weights

__all__ = ["KWinners", "KWinners2d", "SparseWeights", "is_kwinners", "rezero_weights", "update_boost_strength"]
