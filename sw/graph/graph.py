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

Activations
-----------
``conv``, ``fc`` and ``add`` carry ``attrs["activation"]``: ``None``,
``"relu"``, ``"relu6"`` or ``("clip", lo, hi)`` (set by :func:`fuse_activations`).

Ops
---
``fc``
    Fully connected. Inputs ``[x, weight]`` or ``[x, weight, bias]``: ``x`` is
    a feature map ``[M, K]``, ``weight`` a constant ``[K, N]`` and ``bias`` a
    constant ``[N]``; ``y[M, N] = act(x @ weight + bias)``. MACs ``M*K*N``.
``conv``
    2-D convolution, inputs ``[x, weight]`` or ``[x, weight, bias]``; ``x``
    NHWC, ``weight`` ``[Cout, Fh, Fw, Cin/groups]``, ``bias`` ``[Cout]``.
    Attributes ``stride=(sh, sw)``, ``pads=(top, left, bottom, right)``,
    ``groups``, ``dilation=(dh, dw)``, ``activation``. Output channel
    ``g*Cout/groups + o`` reads input channels ``g*Cin/groups ...`` (ONNX
    grouping). MACs (seed 000) ``N*Ho*Wo*Cout*Fh*Fw*Cin/groups``.
``maxpool``, ``avgpool``
    Attributes ``kernel=(kh, kw)``, ``stride``, ``pads`` (as conv), ``ceil_mode``
    (maxpool only); ``avgpool`` also ``count_include_pad``. NHWC in and out.
``gap``
    Global average pool ``[N, H, W, C] -> [N, 1, 1, C]``.
``add``
    Elementwise sum of two feature maps of the same shape; ``activation``.
``relu``, ``clip``
    ``max(x, 0)``; ``clip(x, min, max)`` (attributes ``min``, ``max``), any shape.
``transpose``
    Attribute ``perm`` (the batch axis stays first): layout changes at the
    edges of imported NCHW models.
``flatten``
    ``[M, d1, d2, ...] -> [M, d1 * d2 * ...]`` (attribute ``axis`` must be 1),
    row-major over the data as stored.

Pooling, ``add``, ``relu``, ``clip``, ``transpose`` and ``flatten`` count 0 MACs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from celosia.errors import InputError, ModelError

__all__ = [
    "Tensor", "Node", "Graph", "OpSpec", "OPS", "ACTIVATIONS", "LazyInit",
    "FUSABLE_OPS", "fuse_activations", "run_float", "execute_float", "check_activation",
    "apply_activation", "activation_of",
]

#: Named activations a ``conv`` / ``fc`` / ``add`` node may carry in
#: ``attrs["activation"]``; ``("clip", lo, hi)`` is allowed as well.
ACTIVATIONS = (None, "relu", "relu6")

Shape = tuple  # of int | None; None only for the batch dimension


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


def check_activation(act: Any, where: str) -> None:
    """Raise :class:`ModelError` unless ``act`` is a valid fused activation."""
    if act in ACTIVATIONS:
        return
    if (isinstance(act, tuple) and len(act) == 3 and act[0] == "clip"
            and all(isinstance(v, (int, float)) for v in act[1:]) and act[1] <= act[2]):
        return
    raise ModelError(f"{where}: activation must be one of {ACTIVATIONS} or "
                     f"('clip', lo, hi), not {act!r}")


def apply_activation(y: np.ndarray, act: Any) -> np.ndarray:
    """``y`` after the fused activation ``act`` (float reference)."""
    if act is None:
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    return np.clip(y, act[1], act[2])


def _const_of(graph: Graph, node: Node, pos: int, what: str, shape_desc: str) -> Tensor:
    t = graph.tensors[node.inputs[pos]]
    if not t.is_const:
        raise ModelError(f"{node.op} node '{node.name}': {what} '{t.name}' must be a constant "
                         f"{shape_desc}, not a feature map")
    return t


def _fmap_of(graph: Graph, node: Node, pos: int = 0) -> Tensor:
    t = graph.tensors[node.inputs[pos]]
    if t.is_const:
        raise ModelError(f"{node.op} node '{node.name}': input '{t.name}' must be a feature "
                         f"map, not a constant")
    return t


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
    check_activation(node.attrs.get("activation"), where)
    return [(x.shape[0], n)]


def _fc_macs(graph: Graph, node: Node, batch: int) -> int:
    m = _concrete(graph.tensors[node.inputs[0]].shape, batch)[0]
    k, n = graph.tensors[node.inputs[1]].shape
    return m * k * n


def _fc_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    y = values[0] @ values[1]
    if len(values) == 3:
        y = y + values[2]
    return [apply_activation(y, node.attrs.get("activation"))]


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


# spatial ops (NHWC)

def _pair(v: Any, name: str, where: str, default: tuple) -> tuple[int, int]:
    if v is None:
        return default
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ModelError(f"{where}: {name} must be 2 integers, not {v}")
    return v


def _window_attrs(node: Node, where: str, kernel: tuple | None = None) -> dict:
    a = node.attrs
    k = kernel if kernel is not None else _pair(a.get("kernel"), "kernel", where, None)
    if k is None:
        raise ModelError(f"{where}: attribute 'kernel' is required")
    stride = _pair(a.get("stride"), "stride", where, (1, 1))
    dil = _pair(a.get("dilation"), "dilation", where, (1, 1))
    pads = tuple(int(p) for p in a.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4:
        raise ModelError(f"{where}: pads must be (top, left, bottom, right), not {pads}")
    if min(k) < 1 or min(stride) < 1 or min(dil) < 1 or min(pads) < 0:
        raise ModelError(f"{where}: kernel {k}, stride {stride} and dilation {dil} must be "
                         f">= 1 and pads {pads} >= 0")
    return {"kernel": k, "stride": stride, "dilation": dil, "pads": pads,
            "ceil_mode": bool(a.get("ceil_mode", False))}


def _out_size(n: int, k: int, s: int, d: int, p0: int, p1: int, ceil: bool) -> int:
    span = n + p0 + p1 - d * (k - 1) - 1
    if span < 0:
        return 0
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + p0:  # the last window must start inside (PyTorch/ONNX)
        o -= 1
    return o


def _spatial_out(x: Tensor, w: dict, where: str) -> tuple[int, int]:
    if len(x.shape) != 4 or any(d is None for d in x.shape[1:]):
        raise ModelError(f"{where}: input '{x.name}' must be NHWC [N, H, W, C], "
                         f"not {_fmt(x.shape)}")
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = (
        w["kernel"], w["stride"], w["dilation"], w["pads"])
    ho = _out_size(x.shape[1], kh, sh, dh, pt, pb, w["ceil_mode"])
    wo = _out_size(x.shape[2], kw, sw, dw, pl, pr, w["ceil_mode"])
    if ho < 1 or wo < 1:
        raise ModelError(f"{where}: a {kh}x{kw} window does not fit input "
                         f"'{x.name}' {_fmt(x.shape)} with pads {w['pads']}")
    return ho, wo


def _conv_infer(graph: Graph, node: Node) -> list[Shape]:
    where = f"conv node '{node.name}'"
    x = _fmap_of(graph, node)
    w = _const_of(graph, node, 1, "weight", "[Cout, Fh, Fw, Cin/groups]")
    if len(w.shape) != 4:
        raise ModelError(f"{where}: weight '{w.name}' must be [Cout, Fh, Fw, Cin/groups], "
                         f"not {_fmt(w.shape)}")
    cout, fh, fw, cg = w.shape
    groups = int(node.attrs.get("groups", 1))
    win = _window_attrs(node, where, (fh, fw))
    ho, wo = _spatial_out(x, win, where)
    cin = x.shape[3]
    if groups < 1 or cin % groups or cout % groups or cin // groups != cg:
        raise ModelError(f"{where}: input '{x.name}' has {cin} channels and weight "
                         f"'{w.name}' is {_fmt(w.shape)}: with groups={groups} both channel "
                         f"counts must divide and Cin/groups must be {cg}")
    if len(node.inputs) == 3:
        b = _const_of(graph, node, 2, "bias", f"[{cout}]")
        if b.shape != (cout,):
            raise ModelError(f"{where}: bias '{b.name}' must be [{cout}], not {_fmt(b.shape)}")
    check_activation(node.attrs.get("activation"), where)
    return [(x.shape[0], ho, wo, cout)]


def _conv_macs(graph: Graph, node: Node, batch: int) -> int:
    n, ho, wo, cout = _concrete(graph.tensors[node.outputs[0]].shape, batch)
    _, fh, fw, cg = graph.tensors[node.inputs[1]].shape
    return n * ho * wo * cout * fh * fw * cg


def _pad(x: np.ndarray, pads: tuple, value: float) -> np.ndarray:
    pt, pl, pb, pr = pads
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, win: dict, ho: int, wo: int, value: float = 0.0) -> np.ndarray:
    """``[N, Ho, Wo, C, kh, kw]`` views of the padded NHWC input."""
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = (
        win["kernel"], win["stride"], win["dilation"], win["pads"])
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # ceil_mode may need room beyond the stated bottom / right pads
    pb = max(pb, (ho - 1) * sh + eh - x.shape[1] - pt)
    pr = max(pr, (wo - 1) * sw + ew - x.shape[2] - pl)
    xp = _pad(x, (pt, pl, pb, pr), value)
    v = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(1, 2))
    return v[:, :(ho - 1) * sh + 1:sh, :(wo - 1) * sw + 1:sw, :, ::dh, ::dw]


def _conv_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    x, w = values[0], values[1]
    cout, fh, fw, cg = w.shape
    g = int(node.attrs.get("groups", 1))
    win = _window_attrs(node, "conv", (fh, fw))
    _, ho, wo, _ = graph.tensors[node.outputs[0]].shape
    p = _windows(x, win, ho, wo)                        # [N, Ho, Wo, C, fh, fw]
    p = p.reshape(p.shape[:3] + (g, cg, fh, fw))        # [N, Ho, Wo, G, Cg, fh, fw]
    wg = w.reshape(g, cout // g, fh, fw, cg)            # [G, Og, fh, fw, Cg]
    y = np.einsum("nhwgcij,goijc->nhwgo", p, wg, optimize=True)
    y = y.reshape(y.shape[:3] + (cout,))
    if len(values) == 3:
        y = y + values[2]
    return [apply_activation(y, node.attrs.get("activation"))]


def _pool_infer(graph: Graph, node: Node) -> list[Shape]:
    where = f"{node.op} node '{node.name}'"
    x = _fmap_of(graph, node)
    win = _window_attrs(node, where)
    if win["dilation"] != (1, 1):
        raise ModelError(f"{where}: dilated pooling is not supported")
    if node.op == "avgpool" and win["ceil_mode"]:
        raise ModelError(f"{where}: ceil_mode is supported for maxpool only")
    ho, wo = _spatial_out(x, win, where)
    return [(x.shape[0], ho, wo, x.shape[3])]


def _maxpool_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    win = _window_attrs(node, "maxpool")
    _, ho, wo, _ = graph.tensors[node.outputs[0]].shape
    return [_windows(values[0], win, ho, wo, -np.inf).max(axis=(4, 5))]


def _avgpool_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    win = _window_attrs(node, "avgpool")
    _, ho, wo, _ = graph.tensors[node.outputs[0]].shape
    x = values[0]
    s = _windows(x, win, ho, wo).sum(axis=(4, 5), dtype=np.float64)
    if node.attrs.get("count_include_pad", False):
        div = np.float64(win["kernel"][0] * win["kernel"][1])
    else:
        ones = np.ones((1,) + x.shape[1:3] + (1,), np.float64)
        div = _windows(ones, win, ho, wo).sum(axis=(4, 5))
    return [(s / div).astype(np.float32)]


def _gap_infer(graph: Graph, node: Node) -> list[Shape]:
    x = _fmap_of(graph, node)
    if len(x.shape) != 4:
        raise ModelError(f"gap node '{node.name}': input '{x.name}' must be NHWC "
                         f"[N, H, W, C], not {_fmt(x.shape)}")
    return [(x.shape[0], 1, 1, x.shape[3])]


def _add_infer(graph: Graph, node: Node) -> list[Shape]:
    a, b = _fmap_of(graph, node, 0), _fmap_of(graph, node, 1)
    if a.shape != b.shape:
        raise ModelError(f"add node '{node.name}': inputs '{a.name}' {_fmt(a.shape)} and "
                         f"'{b.name}' {_fmt(b.shape)} must have the same shape")
    check_activation(node.attrs.get("activation"), f"add node '{node.name}'")
    return [a.shape]


def _clip_infer(graph: Graph, node: Node) -> list[Shape]:
    lo, hi = node.attrs.get("min", -math.inf), node.attrs.get("max", math.inf)
    if not lo <= hi:
        raise ModelError(f"clip node '{node.name}': min {lo} must not exceed max {hi}")
    return _same_infer(graph, node)


def _transpose_infer(graph: Graph, node: Node) -> list[Shape]:
    x = graph.tensors[node.inputs[0]]
    perm = tuple(int(p) for p in node.attrs.get("perm", ()))
    if sorted(perm) != list(range(len(x.shape))) or perm[0] != 0:
        raise ModelError(f"transpose node '{node.name}': perm {perm} must permute the "
                         f"{len(x.shape)} axes of '{x.name}' keeping the batch axis first")
    return [tuple(x.shape[p] for p in perm)]


OPS: dict[str, OpSpec] = {
    "fc": OpSpec(n_inputs=(2, 3), infer=_fc_infer, macs=_fc_macs, run=_fc_run,
                 param_bytes={1: 1, 2: 4}),
    "conv": OpSpec(n_inputs=(2, 3), infer=_conv_infer, macs=_conv_macs, run=_conv_run,
                   param_bytes={1: 1, 2: 4}),
    "maxpool": OpSpec(n_inputs=(1, 1), infer=_pool_infer, macs=_no_macs, run=_maxpool_run),
    "avgpool": OpSpec(n_inputs=(1, 1), infer=_pool_infer, macs=_no_macs, run=_avgpool_run),
    "gap": OpSpec(n_inputs=(1, 1), infer=_gap_infer, macs=_no_macs,
                  run=lambda g, n, v: [v[0].mean(axis=(1, 2), keepdims=True, dtype=np.float64)]),
    "add": OpSpec(n_inputs=(2, 2), infer=_add_infer, macs=_no_macs,
                  run=lambda g, n, v: [apply_activation(v[0] + v[1], n.attrs.get("activation"))]),
    "relu": OpSpec(n_inputs=(1, 1), infer=_same_infer, macs=_no_macs,
                   run=lambda g, n, v: [np.maximum(v[0], 0)]),
    "clip": OpSpec(n_inputs=(1, 1), infer=_clip_infer, macs=_no_macs,
                   run=lambda g, n, v: [np.clip(v[0], n.attrs.get("min", -np.inf),
                                                n.attrs.get("max", np.inf))]),
    "transpose": OpSpec(n_inputs=(1, 1), infer=_transpose_infer, macs=_no_macs,
                        run=lambda g, n, v: [np.ascontiguousarray(
                            np.transpose(v[0], n.attrs["perm"]))]),
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


# --- passes ----------------------------------------------------------------------------

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


# --- float reference -------------------------------------------------------------------

def execute_float(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` in float32 NumPy; returns every tensor's value by name.

    The reference against which importers and the quantizer are checked (and
    whose intermediate values calibrate the quantizer). Lazy constants are
    generated when a node reads them and are not in the result. Inputs are fed
    in the graph input's own layout (NCHW for imported ONNX models, whose
    first node transposes). Raises :class:`InputError`
    for a missing, unknown or mis-shaped input.
    """
    values: dict[str, np.ndarray] = {k: t.data for k, t in graph.tensors.items()
                                     if t.data is not None}
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
        ins = [values[i] if i in values else graph.tensors[i].value() for i in node.inputs]
        outs = OPS[node.op].run(graph, node, ins)
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
