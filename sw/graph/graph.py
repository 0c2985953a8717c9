"""The high-level graph: nodes are operators, edges are tensors.

A :class:`Graph` is what importers produce and what the quantizer and compiler
consume. Nodes are kept in topological order; every tensor (graph input,
constant or node output) lives in ``Graph.tensors`` under its name. The batch
dimension of feature maps is ``None`` (symbolic) and is chosen only when
counting (``batch=``) or running.

Bookkeeping follows seed 000 ("edges are memory and nodes are operators"):
operations per node (:meth:`Graph.node_macs`), parameter memory per node
(:meth:`Graph.param_bytes`: int8 weights, int32 biases) and memory per edge
(:meth:`Graph.fmap_bytes`: int8 feature maps).

Each op is described once in :data:`OPS` by an :class:`OpSpec` (arity, shape
inference, MAC count, parameter widths, float reference); conv / pool / add
slot in by adding an entry, not by editing the graph class.

Ops
---
``fc``
    Fully connected. Inputs ``[x, weight]`` or ``[x, weight, bias]``: ``x`` is
    a feature map ``[M, K]``, ``weight`` a constant ``[K, N]`` and ``bias`` a
    constant ``[N]``; ``y[M, N] = act(x @ weight + bias)``. Attribute
    ``activation``: ``None`` or ``"relu"`` (set by :func:`fuse_activations`).
``relu``
    ``y = max(x, 0)``, any shape.
``flatten``
    ``[M, d1, d2, ...] -> [M, d1 * d2 * ...]`` (attribute ``axis`` must be 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, ModelError

__all__ = [
    "Tensor", "Node", "Graph", "OpSpec", "OPS", "ACTIVATIONS",
    "fuse_activations", "run_float", "execute_float",
]

#: Activations an ``fc`` node may carry in ``attrs["activation"]``.
ACTIVATIONS = (None, "relu")

Shape = tuple  # of int | None; None only for the batch dimension


@dataclass
class Tensor:
    """An edge of the graph.

    Parameters
    ----------
    name : str
        Unique within the graph.
    shape : tuple of (int or None)
        ``None`` marks the symbolic batch dimension of a feature map.
    dtype : str
        NumPy dtype name of the float model's values (``"float32"``).
    data : numpy.ndarray or None
        The value of a constant (weight, bias); ``None`` for feature maps.
    qparams : object or None
        Quantization parameters, filled in by ``sw/quant``.
    """

    name: str
    shape: Shape
    dtype: str = "float32"
    data: np.ndarray | None = None
    qparams: Any = None

    def __post_init__(self):
        self.shape = tuple(None if d is None else int(d) for d in self.shape)

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass
class Node:
    """An operator of the graph.

    Parameters
    ----------
    name : str
        Unique within the graph; error messages name it.
    op : str
        A key of :data:`OPS` (``"fc"``, ``"relu"``, ``"flatten"``).
    inputs, outputs : list of str
        Tensor names, in the order the op defines.
    attrs : dict
        Op attributes (``activation`` for ``fc``, ``axis`` for ``flatten``).
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Node:
        return Node(self.name, self.op, list(self.inputs), list(self.outputs), dict(self.attrs))


# --- op descriptions -------------------------------------------------------------------

@dataclass(frozen=True)
class OpSpec:
    """Everything the graph needs to know about one op.

    ``infer(graph, node)`` returns the output shapes (raising :class:`ModelError`
    for inconsistent inputs); ``macs(graph, node, batch)`` counts multiply-
    accumulates; ``param_bytes`` maps an input position to the bytes per element
    that input takes on the accelerator (int8 weights: 1, int32 biases: 4);
    ``run(graph, node, values)`` is the float reference, returning the outputs.
    """

    n_inputs: tuple[int, int]
    infer: Callable[[Graph, Node], list[Shape]]
    macs: Callable[[Graph, Node, int], int]
    run: Callable[[Graph, Node, list[np.ndarray]], list[np.ndarray]]
    param_bytes: Mapping[int, int] = field(default_factory=dict)
    n_outputs: int = 1


def _concrete(shape: Shape, batch: int) -> tuple[int, ...]:
    return tuple(batch if d is None else d for d in shape)


def _numel(shape: Shape, batch: int) -> int:
    return math.prod(_concrete(shape, batch))


def _fc_infer(graph: Graph, node: Node) -> list[Shape]:
    x = graph.tensors[node.inputs[0]]
    w = graph.tensors[node.inputs[1]]
    where = f"fc node '{node.name}'"
    if x.is_const:
        raise ModelError(f"{where}: input '{x.name}' must be a feature map, not a constant")
    if len(x.shape) != 2:
        raise ModelError(f"{where}: input '{x.name}' must be 2-D [M, K], not {_fmt(x.shape)}")
    if not w.is_const or len(w.shape) != 2:
        raise ModelError(f"{where}: weight '{w.name}' must be a constant [K, N], "
                         f"not {'a feature map' if not w.is_const else _fmt(w.shape)}")
    k, n = w.shape
    if x.shape[1] != k:
        raise ModelError(f"{where}: input '{x.name}' has K={x.shape[1]} but weight "
                         f"'{w.name}' is {_fmt(w.shape)} (K={k})")
    if len(node.inputs) == 3:
        b = graph.tensors[node.inputs[2]]
        if not b.is_const or b.shape != (n,):
            raise ModelError(f"{where}: bias '{b.name}' must be a constant [{n}], "
                             f"not {'a feature map' if not b.is_const else _fmt(b.shape)}")
    act = node.attrs.get("activation")
    if act not in ACTIVATIONS:
        raise ModelError(f"{where}: activation must be one of {ACTIVATIONS}, not {act!r}")
    return [(x.shape[0], n)]


def _fc_macs(graph: Graph, node: Node, batch: int) -> int:
    m = _concrete(graph.tensors[node.inputs[0]].shape, batch)[0]
    k, n = graph.tensors[node.inputs[1]].shape
    return m * k * n


def _fc_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    y = values[0] @ values[1]
    if len(values) == 3:
        y = y + values[2]
    if node.attrs.get("activation") == "relu":
        y = np.maximum(y, 0)
    return [y]


def _same_infer(graph: Graph, node: Node) -> list[Shape]:
    return [graph.tensors[node.inputs[0]].shape]


def _no_macs(graph: Graph, node: Node, batch: int) -> int:
    return 0


def _flatten_infer(graph: Graph, node: Node) -> list[Shape]:
    x = graph.tensors[node.inputs[0]]
    axis = node.attrs.get("axis", 1)
    if axis != 1:
        raise ModelError(f"flatten node '{node.name}': axis must be 1, not {axis}")
    if len(x.shape) < 1 or any(d is None for d in x.shape[1:]):
        raise ModelError(f"flatten node '{node.name}': input '{x.name}' must have a batch "
                         f"dimension and fixed other dimensions, not {_fmt(x.shape)}")
    return [(x.shape[0], math.prod(x.shape[1:]))]


OPS: dict[str, OpSpec] = {
    "fc": OpSpec(n_inputs=(2, 3), infer=_fc_infer, macs=_fc_macs, run=_fc_run,
                 param_bytes={1: 1, 2: 4}),
    "relu": OpSpec(n_inputs=(1, 1), infer=_same_infer, macs=_no_macs,
                   run=lambda g, n, v: [np.maximum(v[0], 0)]),
    "flatten": OpSpec(n_inputs=(1, 1), infer=_flatten_infer, macs=_no_macs,
                      run=lambda g, n, v: [v[0].reshape(v[0].shape[0], -1)]),
}


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


# --- the graph -------------------------------------------------------------------------

class Graph:
    """A DNN as operators (nodes, in topological order) and tensors (edges).

    Build with :meth:`add_input`, :meth:`add_const`, :meth:`add_node` (which
    infers output shapes) and :meth:`add_output`; check with :meth:`validate`.
    """

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.nodes: list[Node] = []
        self.tensors: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, inputs={self.inputs}, outputs={self.outputs}, "
                f"nodes=[{', '.join(f'{n.name}:{n.op}' for n in self.nodes)}])")

    # construction

    def _add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise ModelError(f"graph '{self.name}': tensor '{tensor.name}' defined twice")
        self.tensors[tensor.name] = tensor
        return tensor

    def add_input(self, name: str, shape: Shape, dtype: str = "float32") -> Tensor:
        """Add a graph input; ``None`` in ``shape`` marks the batch dimension."""
        tensor = self._add_tensor(Tensor(name, tuple(shape), dtype))
        self.inputs.append(name)
        return tensor

    def add_const(self, name: str, data: np.ndarray) -> Tensor:
        """Add a constant (weight, bias) holding ``data``."""
        data = np.asarray(data)
        return self._add_tensor(Tensor(name, data.shape, str(data.dtype), data))

    def add_node(self, op: str, name: str, inputs: list[str], outputs: list[str],
                 **attrs) -> Node:
        """Append a node after all existing ones, creating its output tensors.

        The inputs must already exist; output shapes are inferred from the op.
        """
        node = Node(name, op, list(inputs), list(outputs), dict(attrs))
        self._check_node(node, set(self.tensors))
        for out, shape in zip(node.outputs, OPS[op].infer(self, node)):
            self._add_tensor(Tensor(out, shape, self.tensors[node.inputs[0]].dtype))
        self.nodes.append(node)
        return node

    def add_output(self, name: str) -> None:
        """Mark an existing tensor as a graph output."""
        if name not in self.tensors:
            raise ModelError(f"graph '{self.name}': output '{name}' is not a tensor of the graph")
        self.outputs.append(name)

    def copy(self) -> Graph:
        """A copy whose structure can be edited; constant arrays are shared."""
        g = Graph(self.name)
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        g.nodes = [n.copy() for n in self.nodes]
        g.tensors = {k: dataclasses.replace(t) for k, t in self.tensors.items()}
        return g

    # queries

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        """The node writing ``tensor``, or ``None`` for inputs and constants."""
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def const(self, name: str) -> np.ndarray:
        """The value of constant tensor ``name``."""
        t = self.tensors[name]
        if not t.is_const:
            raise ModelError(f"graph '{self.name}': tensor '{name}' is not a constant")
        return t.data

    def fmap_inputs(self, node: Node) -> list[str]:
        """The node's inputs that are feature maps (not constants)."""
        return [i for i in node.inputs if not self.tensors[i].is_const]

    # checking

    def _check_node(self, node: Node, available: set[str]) -> None:
        where = f"graph '{self.name}': node '{node.name}'"
        if node.op not in OPS:
            raise ModelError(f"{where} has op '{node.op}', not one of {sorted(OPS)}")
        spec = OPS[node.op]
        lo, hi = spec.n_inputs
        if not lo <= len(node.inputs) <= hi:
            raise ModelError(f"{where} ({node.op}) takes {lo}..{hi} inputs, not {len(node.inputs)}")
        if len(node.outputs) != spec.n_outputs:
            raise ModelError(f"{where} ({node.op}) has {spec.n_outputs} output(s), "
                             f"not {len(node.outputs)}")
        for i in node.inputs:
            if i not in available:
                raise ModelError(f"{where} reads tensor '{i}', which is not defined before it")

    def validate(self) -> None:
        """Check names, topological order, arity and every tensor's shape.

        Raises :class:`ModelError` naming the first offending node or tensor.
        """
        where = f"graph '{self.name}'"
        for key, t in self.tensors.items():
            if key != t.name:
                raise ModelError(f"{where}: tensor stored as '{key}' is named '{t.name}'")
        names = [n.name for n in self.nodes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ModelError(f"{where}: node names {sorted(dup)} are used more than once")
        for i in self.inputs:
            if i not in self.tensors or self.tensors[i].is_const:
                raise ModelError(f"{where}: input '{i}' must be a non-constant tensor")
        available = set(self.inputs) | {k for k, t in self.tensors.items() if t.is_const}
        for node in self.nodes:
            self._check_node(node, available)
            for out, shape in zip(node.outputs, OPS[node.op].infer(self, node)):
                if out in available:
                    raise ModelError(f"{where}: tensor '{out}' is written by node "
                                     f"'{node.name}' and defined before it")
                if out not in self.tensors:
                    raise ModelError(f"{where}: output '{out}' of node '{node.name}' "
                                     f"is not in the tensor table")
                if self.tensors[out].shape != shape:
                    raise ModelError(f"{where}: tensor '{out}' is recorded as "
                                     f"{_fmt(self.tensors[out].shape)} but node "
                                     f"'{node.name}' ({node.op}) gives {_fmt(shape)}")
                available.add(out)
        if not self.outputs:
            raise ModelError(f"{where} has no outputs")
        for o in self.outputs:
            if o not in available:
                raise ModelError(f"{where}: output '{o}' is not computed by any node")
        orphans = set(self.tensors) - available
        if orphans:
            raise ModelError(f"{where}: tensors {sorted(orphans)} are neither inputs, "
                             f"constants nor node outputs")

    # bookkeeping (seed 000)

    def _as_node(self, node: Node | str) -> Node:
        return self.node(node) if isinstance(node, str) else node

    def node_macs(self, node: Node | str, batch: int = 1) -> int:
        """Multiply-accumulates of ``node`` for ``batch`` samples (fc: M*K*N)."""
        node = self._as_node(node)
        return OPS[node.op].macs(self, node, batch)

    def param_bytes(self, node: Node | str) -> int:
        """Parameter memory of ``node``: int8 weights plus int32 biases."""
        node = self._as_node(node)
        widths = OPS[node.op].param_bytes
        return sum(widths[i] * math.prod(self.tensors[name].shape)
                   for i, name in enumerate(node.inputs) if i in widths)

    def fmap_bytes(self, tensor: Tensor | str, batch: int = 1) -> int:
        """Memory of a feature map held as int8, for ``batch`` samples."""
        t = self.tensors[tensor] if isinstance(tensor, str) else tensor
        return _numel(t.shape, batch)

    def summary(self, batch: int = 1) -> list[dict]:
        """Per node: ``{name, op, macs, params, in_bytes, out_bytes}``.

        ``in_bytes`` / ``out_bytes`` count the node's feature-map inputs and
        outputs (int8), constants excluded; ``params`` is :meth:`param_bytes`.
        """
        return [{
            "name": n.name,
            "op": n.op,
            "macs": self.node_macs(n, batch),
            "params": self.param_bytes(n),
            "in_bytes": sum(self.fmap_bytes(i, batch) for i in self.fmap_inputs(n)),
            "out_bytes": sum(self.fmap_bytes(o, batch) for o in n.outputs),
        } for n in self.nodes]


# --- passes ----------------------------------------------------------------------------

def fuse_activations(graph: Graph) -> Graph:
    """Fold each ``relu`` into the ``fc`` feeding it (``attrs["activation"] = "relu"``).

    Folding applies only where the fc's output is read by that relu alone and is
    not a graph output, so no tensor anyone can observe disappears. Returns a new
    graph; ``graph`` is left as it was.
    """
    g = graph.copy()
    for relu in [n for n in g.nodes if n.op == "relu"]:
        src = relu.inputs[0]
        fc = g.producer(src)
        if (fc is None or fc.op != "fc" or fc.attrs.get("activation") is not None
                or src in g.outputs or len(g.consumers(src)) != 1):
            continue
        fc.attrs["activation"] = "relu"
        fc.outputs = list(relu.outputs)
        g.nodes.remove(relu)
        del g.tensors[src]
    g.validate()
    return g


# --- float reference -------------------------------------------------------------------

def execute_float(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` in float32 NumPy; returns every tensor's value by name.

    The reference against which importers and the quantizer are checked (and
    whose intermediate values calibrate the quantizer). Raises :class:`InputError`
    for a missing, unknown or mis-shaped input.
    """
    values: dict[str, np.ndarray] = {k: t.data for k, t in graph.tensors.items() if t.is_const}
    unknown = set(feeds) - set(graph.inputs)
    if unknown:
        raise InputError(f"graph '{graph.name}' has no input(s) {sorted(unknown)}; "
                         f"inputs: {graph.inputs}")
    for name in graph.inputs:
        if name not in feeds:
            raise InputError(f"graph '{graph.name}': input '{name}' is missing")
        t = graph.tensors[name]
        try:
            x = np.asarray(feeds[name], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InputError(f"input '{name}': not numeric data ({e})") from None
        if len(x.shape) != len(t.shape) or any(
                d is not None and d != s for d, s in zip(t.shape, x.shape)):
            raise InputError(f"input '{name}' must have shape {_fmt(t.shape)}, "
                             f"not {list(x.shape)}")
        values[name] = x
    for node in graph.nodes:
        outs = OPS[node.op].run(graph, node, [values[i] for i in node.inputs])
        for name, v in zip(node.outputs, outs):
            values[name] = np.asarray(v, dtype=np.float32)
    return values


def run_float(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Run a single-output graph in float32 NumPy and return its output.

    ``x`` is the array for a single-input graph, or a mapping from input names.
    """
    if len(graph.outputs) != 1:
        raise ModelError(f"graph '{graph.name}' has {len(graph.outputs)} outputs; "
                         f"use execute_float")
    if not isinstance(x, Mapping):
        if len(graph.inputs) != 1:
            raise InputError(f"graph '{graph.name}' has inputs {graph.inputs}; "
                             f"pass a mapping from input name to array")
        x = {graph.inputs[0]: x}
    return execute_float(graph, x)[graph.outputs[0]]
