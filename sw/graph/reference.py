"""The float reference of the high-level graph: float32 NumPy, one kernel per op.

The reference against which importers and the quantizer are checked (and whose
intermediate values calibrate the quantizer). :data:`KERNELS` maps each op of
:data:`~celosia.sw.graph.ops.OPS` to ``kernel(graph, node, values) -> outputs``.
Convolution and the pooling windows are the golden model's
(:func:`celosia.sim.golden.conv.grouped_conv`, :func:`~celosia.sim.golden.conv.conv_windows`):
one float convolution in the code base.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from celosia.errors import InputError, ModelError
from celosia.sim.golden.conv import conv_windows, grouped_conv

from .ir import Graph, Node
from .ops import _fmt, _window_attrs

__all__ = ["KERNELS", "apply_activation", "execute_float", "run_float"]


def apply_activation(y: np.ndarray, act: Any) -> np.ndarray:
    """``y`` after the fused activation ``act`` (float reference)."""
    if act is None:
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    return np.clip(y, act[1], act[2])


def _fc_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    y = values[0] @ values[1]
    if len(values) == 3:
        y = y + values[2]
    return [apply_activation(y, node.attrs.get("activation"))]


def _conv_run(graph: Graph, node: Node, values: list[np.ndarray]) -> list[np.ndarray]:
    w = values[1]
    win = _window_attrs(node, "conv", w.shape[1:3])
    _, ho, wo, _ = graph.tensors[node.outputs[0]].shape
    y = grouped_conv(values[0], w, win["stride"], win["dilation"], win["pads"],
                     int(node.attrs.get("groups", 1)), (ho, wo))
    if len(values) == 3:
        y = y + values[2]
    return [apply_activation(y, node.attrs.get("activation"))]


def _windows(x: np.ndarray, win: dict, ho: int, wo: int, value: float = 0.0) -> np.ndarray:
    """``[N, Ho, Wo, C, kh, kw]`` views of the padded NHWC input (:func:`conv_windows`)."""
    return conv_windows(x, win["kernel"], win["stride"], win["dilation"], win["pads"], (ho, wo), value)


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


#: The float kernel of every op: ``kernel(graph, node, values) -> list of outputs``.
KERNELS: dict[str, Callable[[Any, Any, list[np.ndarray]], list[np.ndarray]]] = {
    "fc": _fc_run,
    "conv": _conv_run,
    "maxpool": _maxpool_run,
    "avgpool": _avgpool_run,
    "gap": lambda g, n, v: [v[0].mean(axis=(1, 2), keepdims=True, dtype=np.float64)],
    "add": lambda g, n, v: [apply_activation(v[0] + v[1], n.attrs.get("activation"))],
    "relu": lambda g, n, v: [np.maximum(v[0], 0)],
    "clip": lambda g, n, v: [np.clip(v[0], n.attrs.get("min", -np.inf), n.attrs.get("max", np.inf))],
    "transpose": lambda g, n, v: [np.ascontiguousarray(np.transpose(v[0], n.attrs["perm"]))],
    "flatten": lambda g, n, v: [v[0].reshape(v[0].shape[0], -1)],
}


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
        outs = KERNELS[node.op](graph, node, ins)
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
