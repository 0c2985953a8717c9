"""The high-level graph (operators and tensors), its bookkeeping and float reference.

:mod:`.ir` (tensors, nodes, the graph), :mod:`.ops` (the op registry),
:mod:`.passes` (graph rewrites) and :mod:`.reference` (the float executor).
"""

from .ir import Graph, LazyInit, Node, Tensor
from .ops import ACTIVATIONS, OPS, OpSpec, check_activation
from .passes import FUSABLE_OPS, activation_of, fuse_activations
from .reference import apply_activation, execute_float, run_float

__all__ = [
    "Tensor", "Node", "Graph", "OpSpec", "OPS", "ACTIVATIONS", "LazyInit", "FUSABLE_OPS",
    "fuse_activations", "run_float", "execute_float", "check_activation",
    "apply_activation", "activation_of",
]
