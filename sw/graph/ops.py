"""The op registry of the high-level graph: arity, shape inference, MACs, parameter widths.

Each op is described once in :data:`OPS` by an :class:`OpSpec`; the graph class
(:mod:`celosia.sw.graph.ir`) looks ops up here, and the float reference
(:data:`celosia.sw.graph.reference.KERNELS`) has one kernel per entry. Layouts as
in :mod:`celosia.sw.graph.ir` (NHWC feature maps, OHWI conv weights).

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
    (avgpool: only where it leaves the output size unchanged); ``avgpool`` also
    ``count_include_pad``. NHWC in and out.
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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from celosia.errors import ModelError
from celosia.sim.golden.ops import conv_output_size

if TYPE_CHECKING:  # annotations only: ir imports this module
    from .ir import Graph, Node, Tensor

__all__ = ["OPS", "OpSpec", "ACTIVATIONS", "check_activation", "Shape"]

#: Named activations a ``conv`` / ``fc`` / ``add`` node may carry in
#: ``attrs["activation"]``; ``("clip", lo, hi)`` is allowed as well.
ACTIVATIONS = (None, "relu", "relu6")

Shape = tuple  # of int | None; None only for the batch dimension


@dataclass(frozen=True)
class OpSpec:
    """Everything the graph needs to know about one op.

    ``infer(graph, node)`` returns the output shapes (raising :class:`ModelError`
    for inconsistent inputs); ``macs(graph, node, batch)`` counts multiply-
    accumulates; ``param_bytes`` maps an input position to the bytes per element
    that input takes on the accelerator (int8 weights: 1, int32 biases: 4). The
    op's float reference is :data:`celosia.sw.graph.reference.KERNELS` ``[op]``.
    """

    n_inputs: tuple[int, int]
    infer: Callable[[Graph, Node], list[Shape]]
    macs: Callable[[Graph, Node, int], int]
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
    """:func:`~celosia.sim.golden.conv_output_size`, 0 where the window does not fit."""
    try:
        return conv_output_size(n, k, s, p0, p1, d, ceil)
    except ValueError:
        return 0


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


def _pool_infer(graph: Graph, node: Node) -> list[Shape]:
    where = f"{node.op} node '{node.name}'"
    x = _fmap_of(graph, node)
    win = _window_attrs(node, where)
    if win["dilation"] != (1, 1):
        raise ModelError(f"{where}: dilated pooling is not supported")
    ho, wo = _spatial_out(x, win, where)
    floor = _spatial_out(x, {**win, "ceil_mode": False}, where)
    if node.op == "avgpool" and (ho, wo) != floor:
        raise ModelError(f"{where}: ceil_mode=1 adds windows that overhang the padded input "
                         f"({ho}x{wo} outputs, not {floor[0]}x{floor[1]}); ONNX averages those "
                         f"over fewer taps, which the accelerator's one multiplier per layer "
                         f"cannot; average pooling supports ceil_mode only where it leaves the "
                         f"output size unchanged")
    return [(x.shape[0], ho, wo, x.shape[3])]


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
    "fc": OpSpec(n_inputs=(2, 3), infer=_fc_infer, macs=_fc_macs, param_bytes={1: 1, 2: 4}),
    "conv": OpSpec(n_inputs=(2, 3), infer=_conv_infer, macs=_conv_macs, param_bytes={1: 1, 2: 4}),
    "maxpool": OpSpec(n_inputs=(1, 1), infer=_pool_infer, macs=_no_macs),
    "avgpool": OpSpec(n_inputs=(1, 1), infer=_pool_infer, macs=_no_macs),
    "gap": OpSpec(n_inputs=(1, 1), infer=_gap_infer, macs=_no_macs),
    "add": OpSpec(n_inputs=(2, 2), infer=_add_infer, macs=_no_macs),
    "relu": OpSpec(n_inputs=(1, 1), infer=_same_infer, macs=_no_macs),
    "clip": OpSpec(n_inputs=(1, 1), infer=_clip_infer, macs=_no_macs),
    "transpose": OpSpec(n_inputs=(1, 1), infer=_transpose_infer, macs=_no_macs),
    "flatten": OpSpec(n_inputs=(1, 1), infer=_flatten_infer, macs=_no_macs),
}


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
