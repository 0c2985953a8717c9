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

The package is split by concern: this module holds the IR (:class:`Tensor`,
:class:`Node`, :class:`Graph`); :mod:`~celosia.sw.graph.ops` the op registry
(:data:`~celosia.sw.graph.ops.OPS`: arity, shape inference, MAC count, parameter
widths per op); :mod:`~celosia.sw.graph.passes` the graph rewrites
(:func:`~celosia.sw.graph.passes.fuse_activations`); and
:mod:`~celosia.sw.graph.reference` the float executor (one kernel per op, the
convolution shared with the golden model). A new op is an ``OPS`` entry plus a
float kernel, not an edit of the graph class.

Layout
------
Feature maps with spatial extent are **NHWC** ``[N, H, W, C]`` inside the graph
(the accelerator's layout: channels innermost). Conv weights are **OHWI**
``[Cout, Fh, Fw, Cin / groups]``, biases ``[Cout]``. Graphs built natively (the
model zoo) take NHWC inputs. The ONNX importer keeps the file's NCHW input as
the graph input (so users feed what onnxruntime takes) and inserts an explicit
``transpose`` node (``perm=(0, 2, 3, 1)``) before the first spatial op; a 4-D
graph output is transposed back to NCHW the same way. Such graphs carry
``graph.meta["input_nchw"] = True`` (informational: no hidden conversion
happens anywhere, the transposes are ordinary nodes).

``flatten`` is always a plain row-major reshape of the data as stored, so
flattening an NHWC map gives (H, W, C) order and moves no data. ONNX flattens
NCHW in (C, H, W) order; the importer reconciles the two by permuting the
*rows of the following fc weight* (see :mod:`celosia.sw.importer.onnx_import`).

Constants may be **lazy**: ``Tensor.init`` (a :class:`LazyInit`) generates the
values on demand from a seed, so a VGG-16 graph (138 M parameters) builds
instantly and MAC / parameter counting needs no memory. ``Graph.const`` and
the float reference generate lazy values when they need them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from celosia.errors import ModelError

from .ops import OPS, Shape, _fmt, _numel

__all__ = ["Tensor", "Node", "Graph", "LazyInit"]


@dataclass(frozen=True)
class LazyInit:
    """Values of a constant generated on demand (random model-zoo weights).

    ``normal(0, std)`` from ``numpy.random.default_rng(seed)``; ``seed`` may be
    an int or a tuple of ints. The same ``LazyInit`` always gives the same array.
    """

    seed: Any
    std: float = 1.0

    def generate(self, shape: tuple, dtype: str = "float32") -> np.ndarray:
        seed = list(self.seed) if isinstance(self.seed, tuple) else self.seed
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(self.std)).astype(dtype)


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
        The value of a constant (weight, bias); ``None`` for feature maps and
        lazy constants.
    qparams : object or None
        Quantization parameters, filled in by ``sw/quant``.
    init : LazyInit or None
        For a lazy constant: how to generate its values (see :meth:`value`).
    """

    name: str
    shape: Shape
    dtype: str = "float32"
    data: np.ndarray | None = None
    qparams: Any = None
    init: LazyInit | None = None

    def __post_init__(self):
        self.shape = tuple(None if d is None else int(d) for d in self.shape)

    @property
    def is_const(self) -> bool:
        return self.data is not None or self.init is not None

    @property
    def is_lazy(self) -> bool:
        return self.data is None and self.init is not None

    def value(self) -> np.ndarray:
        """The constant's values (generated afresh, not kept, for a lazy one)."""
        if self.data is not None:
            return self.data
        if self.init is None:
            raise ModelError(f"tensor '{self.name}' is a feature map, not a constant")
        return self.init.generate(self.shape, self.dtype)

    def materialize(self) -> np.ndarray:
        """Generate a lazy constant's values and keep them in :attr:`data`."""
        self.data = self.value()
        return self.data

    @property
    def size(self) -> int:
        return math.prod(d for d in self.shape if d is not None)


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
        #: Free-form facts about the graph (``input_nchw``: the importer took an
        #: NCHW model and inserted ``transpose`` nodes at its edges).
        self.meta: dict[str, Any] = {}

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

    def add_const(self, name: str, data: np.ndarray | None = None, *,
                  shape: Shape | None = None, init: LazyInit | None = None,
                  dtype: str = "float32") -> Tensor:
        """Add a constant (weight, bias) holding ``data``, or a lazy one.

        ``add_const(name, data)`` stores the array; ``add_const(name, shape=...,
        init=LazyInit(seed, std))`` stores only the shape and how to generate
        the values (see :class:`LazyInit`).
        """
        if data is not None:
            data = np.asarray(data)
            return self._add_tensor(Tensor(name, data.shape, str(data.dtype), data))
        if shape is None or init is None or any(d is None for d in shape):
            raise ModelError(f"graph '{self.name}': constant '{name}' needs data, or a "
                             f"fixed shape and an init")
        return self._add_tensor(Tensor(name, tuple(shape), dtype, None, init=init))

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
        g.meta = dict(self.meta)
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
        """The value of constant tensor ``name`` (generated if it is lazy)."""
        t = self.tensors[name]
        if not t.is_const:
            raise ModelError(f"graph '{self.name}': tensor '{name}' is not a constant")
        return t.value()

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

    def total_macs(self, batch: int = 1) -> int:
        """Multiply-accumulates of the whole graph for ``batch`` samples."""
        return sum(self.node_macs(n, batch) for n in self.nodes)

    def num_params(self) -> int:
        """Number of parameters (weight and bias elements) the nodes read."""
        return sum(math.prod(self.tensors[name].shape) for n in self.nodes
                   for i, name in enumerate(n.inputs) if i in OPS[n.op].param_bytes)

    def total_param_bytes(self) -> int:
        """Parameter memory of the whole graph (int8 weights, int32 biases)."""
        return sum(self.param_bytes(n) for n in self.nodes)

    def materialize(self) -> Graph:
        """Generate every lazy constant's values and keep them (in place)."""
        for t in self.tensors.values():
            if t.is_lazy:
                t.materialize()
        return self

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
