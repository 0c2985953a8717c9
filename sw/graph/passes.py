"""Rewrites of the high-level graph (each returns a new, validated :class:`~celosia.sw.graph.ir.Graph`)."""

from __future__ import annotations

import math
from typing import Any

from .ir import Graph, Node

__all__ = ["FUSABLE_OPS", "activation_of", "fuse_activations"]

#: Ops that can carry a fused activation.
FUSABLE_OPS = ("conv", "fc", "add")


def activation_of(node: Node) -> Any:
    """The fused-activation form of a ``relu`` / ``clip`` node.

    ``relu`` and ``clip(0, inf)`` -> ``"relu"``; ``clip(0, 6)`` -> ``"relu6"``;
    any other clip -> ``("clip", min, max)``.
    """
    if node.op == "relu":
        return "relu"
    lo, hi = float(node.attrs.get("min", -math.inf)), float(node.attrs.get("max", math.inf))
    if lo == 0 and hi == math.inf:
        return "relu"
    if lo == 0 and hi == 6:
        return "relu6"
    return ("clip", lo, hi)


def fuse_activations(graph: Graph) -> Graph:
    """Fold each ``relu`` / ``clip`` into the ``conv``, ``fc`` or ``add`` feeding it.

    The producer's ``attrs["activation"]`` becomes ``"relu"``, ``"relu6"`` or
    ``("clip", lo, hi)`` (see :func:`activation_of`). Folding applies only where
    the producer has no activation yet and its output is read by that node
    alone and is not a graph output, so no tensor anyone can observe
    disappears. Returns a new graph; ``graph`` is left as it was.
    """
    g = graph.copy()
    for act in [n for n in g.nodes if n.op in ("relu", "clip")]:
        src = act.inputs[0]
        prod = g.producer(src)
        if (prod is None or prod.op not in FUSABLE_OPS
                or prod.attrs.get("activation") is not None
                or src in g.outputs or len(g.consumers(src)) != 1):
            continue
        prod.attrs["activation"] = activation_of(act)
        prod.outputs = list(act.outputs)
        g.nodes.remove(act)
        del g.tensors[src]
    g.validate()
    return g
