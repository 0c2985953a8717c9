"""The high-level graph (operators and tensors), its bookkeeping and float reference."""

from .graph import (
    ACTIVATIONS, FUSABLE_OPS, OPS, Graph, LazyInit, Node, OpSpec, Tensor, activation_of,
    apply_activation, check_activation, execute_float, fuse_activations, run_float,
)

__all__ = [
    "Tensor", "Node", "Graph", "OpSpec", "OPS", "ACTIVATIONS", "LazyInit", "FUSABLE_OPS",
    "fuse_activations", "run_float", "execute_float", "check_activation",
    "apply_activation", "activation_of",
]
