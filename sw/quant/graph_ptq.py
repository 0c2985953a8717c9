"""Post-training quantization of a float graph into a :class:`QModel`.

1. :func:`~celosia.sw.graph.fuse_activations` folds each ReLU into its FC.
2. The float graph runs on the calibration samples; every feature map's
   min / max gives its asymmetric int8 parameters (TFLite scheme).
3. Each FC gets per-output-channel symmetric int8 weights, an int32 bias at
   scale ``S_in * S_w[n]``, ``(M0, shift)`` for ``S_in * S_w[n] / S_out`` and the
   activation clamp of TFLite's ``CalculateActivationRangeQuantized``.
"""

from __future__ import annotations

import numpy as np

from celosia.sim.golden import activation_range, round_half_away_from_zero
from celosia.sw.errors import InputError, ModelError
from celosia.sw.graph import Graph, execute_float, fuse_activations
from celosia.sw.quant.model import QLayer, QModel
from celosia.sw.quant.ptq import (choose_activation_qparams, quantize_bias,
                                  quantize_weights_per_channel, requant_params)

__all__ = ["quantize_graph", "HARDWARE_OPS"]

#: Ops the quantizer and compiler map onto the accelerator so far.
HARDWARE_OPS = ("fc", "flatten")


def _chain(graph: Graph) -> list:
    """The graph's nodes as a single chain from its one input to its one output."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ModelError(f"graph '{graph.name}': only single-input, single-output models are "
                         f"supported, not {len(graph.inputs)} inputs / {len(graph.outputs)} outputs")
    current = graph.inputs[0]
    chain = []
    for node in graph.nodes:
        if node.op not in HARDWARE_OPS:
            raise ModelError(f"graph '{graph.name}': node '{node.name}' ({node.op}) cannot run on the "
                             f"accelerator here; supported: Gemm/MatMul (+Add, +Relu), Flatten, Reshape")
        fmaps = graph.fmap_inputs(node)
        if fmaps != [current]:
            raise ModelError(f"graph '{graph.name}': node '{node.name}' does not continue a single "
                             f"chain (reads {fmaps}, expected [{current!r}])")
        current = node.outputs[0]
        chain.append(node)
    if current != graph.outputs[0] or not any(n.op == "fc" for n in chain):
        raise ModelError(f"graph '{graph.name}': expected a chain of fully connected layers")
    return chain


def _fit_bias(w, w_q, w_scales, bias, in_scale):
    """Widen the scale of channels whose weights are (nearly) all zero but whose bias is not.

    With ``S_w = max|w| / 127`` tiny, ``bias / (S_in * S_w)`` overflows int32; the
    smallest scale that keeps the bias within 2^30 steps loses nothing such a
    channel had.
    """
    floor = (np.abs(bias).astype(np.float64) / (float(in_scale) * (1 << 30))).astype(np.float32)
    widen = w_scales < floor
    if not widen.any():
        return w_q, w_scales
    w_scales = np.where(widen, floor, w_scales).astype(np.float32)
    requant = np.clip(round_half_away_from_zero(w / w_scales), -127, 127).astype(np.int8)
    return np.where(widen[None, :], requant, w_q), w_scales


def quantize_graph(graph: Graph, calib: np.ndarray) -> QModel:
    """Quantize ``graph`` calibrating on ``calib`` (float, first axis = samples)."""
    graph = fuse_activations(graph)
    chain = _chain(graph)
    in_name = graph.inputs[0]
    calib = np.asarray(calib)
    if not (np.issubdtype(calib.dtype, np.number) and not np.issubdtype(calib.dtype, np.complexfloating)):
        raise InputError(f"calibration data for input '{in_name}' must be real numbers, not {calib.dtype}")
    if calib.ndim < 1 or calib.size == 0:
        raise InputError(f"calibration data for input '{in_name}' needs at least one sample, "
                         f"got shape {list(calib.shape)}")
    if not np.isfinite(calib).all():
        raise InputError(f"calibration data for input '{in_name}' contains NaN or infinity")
    values = execute_float(graph, {in_name: calib.astype(np.float32)})

    def qparams(tensor):
        v = values[tensor]
        return choose_activation_qparams(float(v.min()), float(v.max()))

    try:
        in_q = qparams(in_name)
    except ValueError as e:
        raise InputError(f"calibration data for input '{in_name}': {e}") from None
    cur_scale, cur_zp = float(in_q.scale), int(in_q.zero_point)
    layers = []
    for node in chain:
        if node.op == "flatten":
            continue  # int8 row-major [batch, features]: flattening moves no data
        try:
            layer = _quantize_fc(graph, node, qparams, cur_scale, cur_zp)
        except ValueError as e:  # the PTQ helpers report bad weights / ranges as ValueError
            raise ModelError(f"graph '{graph.name}': node '{node.name}' ({node.op}): "
                             f"cannot quantize: {e}") from None
        layers.append(layer)
        cur_scale, cur_zp = layer.out_scale, layer.out_zp
    shape = graph.tensors[in_name].shape[1:]
    return QModel(name=graph.name, layers=layers, input_scale=float(in_q.scale),
                  input_zp=int(in_q.zero_point), input_shape=tuple(shape))


def _quantize_fc(graph: Graph, node, qparams, cur_scale: float, cur_zp: int) -> QLayer:
    """One fc node as a :class:`QLayer`, its input quantized with ``(cur_scale, cur_zp)``."""
    w = graph.const(node.inputs[1])
    bias = graph.const(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(w.shape[1], np.float32)
    w_q, w_scales = quantize_weights_per_channel(w, axis=1)
    w_q, w_scales = _fit_bias(w, w_q, w_scales, bias, cur_scale)
    out_q = qparams(node.outputs[0])
    out_scale, out_zp = float(out_q.scale), int(out_q.zero_point)
    m0, shift = requant_params(np.float32(cur_scale), w_scales, np.float32(out_scale))
    act = node.attrs.get("activation") or "none"
    act_min, act_max = activation_range(act, out_scale, out_zp)
    return QLayer(
        name=node.name, op="fc", w=w_q, bias=quantize_bias(bias, np.float32(cur_scale), w_scales),
        m0=m0, shift=shift, in_scale=cur_scale, in_zp=cur_zp, out_scale=out_scale,
        out_zp=out_zp, act_min=int(act_min), act_max=int(act_max), activation=act,
        w_scale=w_scales)
