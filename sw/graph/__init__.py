"""The high-level graph (operators and tensors), its bookkeeping and float reference."""

from .graph import (
    ACTIVATIONS, OPS, Graph, Node, OpSpec, Tensor, execute_float, fuse_activations,
    run_float,
)

__all__ = [
    "Tensor", "Node", "Graph", "OpSpec", "OPS", "ACTIVATIONS",
    "fuse_activations", "run_float", "execute_float",
]
