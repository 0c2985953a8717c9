"""Post-training quantization of a float graph into a :class:`QModel`.

1. :func:`~celosia.sw.graph.fuse_activations` folds each ReLU into its FC.
2. The float graph runs on the calibration samples; every feature map's
   min / max gives its asymmetric int8 parameters (TFLite scheme). Degenerate
   calibration data (fewer than :data:`MIN_CALIB_SAMPLES` distinct samples, a
   constant input, a tensor whose range collapses to one value) draws a
   :class:`CalibrationWarning`, or an :class:`~celosia.errors.InputError` with
   ``on_degenerate="error"`` (docs/numerics.md, "Calibration data").
3. Each FC gets per-output-channel symmetric int8 weights, an int32 bias at
   scale ``S_in * S_w[n]``, ``(M0, shift)`` for ``S_in * S_w[n] / S_out`` and the
   activation clamp of TFLite's ``CalculateActivationRangeQuantized``.
"""

from __future__ import annotations

import warnings

import numpy as np

from celosia.sim import golden
from celosia.sim.golden import activation_range, round_half_away_from_zero
from celosia.errors import InputError, ModelError
from celosia.sw.graph import Graph, execute_float, fuse_activations
from celosia.sw.quant.model import QLayer, QModel
from celosia.sw.quant.ptq import (choose_activation_qparams, quantize_bias,
                                  quantize_weights_per_channel, requant_params)

__all__ = ["quantize_graph", "HARDWARE_OPS", "MIN_CALIB_SAMPLES", "CalibrationWarning"]

#: Fewer distinct calibration samples than this draw a :class:`CalibrationWarning`. With
#: ``n`` exchangeable samples, the chance that a new sample's value of a feature exceeds
#: its calibrated maximum is ``1 / (n + 1)``: 100 keeps it near 1 % (TFLite's converter
#: asks for about 100-500 representative samples); docs/numerics.md.
MIN_CALIB_SAMPLES = 100

#: What :func:`quantize_graph` does with degenerate calibration data.
ON_DEGENERATE = ("warn", "error", "ignore")


class CalibrationWarning(UserWarning):
    """Degenerate calibration data (:func:`quantize_graph`): too few distinct samples, a
    constant input, or a tensor whose calibrated range collapsed to one value. The
    message names the input or tensor (and the node computing it)."""

#: Ops the quantizer and compiler map onto the accelerator (``transpose`` only as
#: the NCHW -> NHWC conversion of an imported model's input).
HARDWARE_OPS = ("fc", "conv", "maxpool", "avgpool", "gap", "add", "flatten", "transpose")


def _check_graph(graph: Graph) -> None:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ModelError(f"graph '{graph.name}': only single-input, single-output models are "
                         f"supported, not {len(graph.inputs)} inputs / {len(graph.outputs)} outputs")
    for i, node in enumerate(graph.nodes):
        if node.op not in HARDWARE_OPS:
            raise ModelError(
                f"graph '{graph.name}': node '{node.name}' ({node.op}) cannot run on the accelerator "
                f"yet; supported: Conv (+BatchNormalization, +Relu/Clip), Gemm/MatMul (+Add, +Relu), "
                f"MaxPool, AveragePool, GlobalAveragePool, Add (+Relu), Flatten, Reshape")
        perm = tuple(node.attrs.get("perm", ()))
        at_input = graph.fmap_inputs(node) == [graph.inputs[0]] and perm == (0, 2, 3, 1)
        at_output = node.outputs[0] == graph.outputs[0] and perm == (0, 3, 1, 2)
        if node.op == "transpose" and not (at_input or at_output):
            raise ModelError(f"graph '{graph.name}': node '{node.name}' (transpose) is only supported "
                             f"as the NCHW <-> NHWC conversion of the model input or output")
        for t in node.inputs:
            tensor = graph.tensors.get(t)
            if tensor is not None and tensor.is_const and not tensor.is_lazy \
                    and not np.isfinite(tensor.data).all():
                raise ModelError(f"graph '{graph.name}': node '{node.name}' ({node.op}): cannot "
                                 f"quantize: constant '{t}' contains NaN or infinity")
        if node.op == "avgpool" and any(node.attrs.get("pads", (0,))) \
                and not node.attrs.get("count_include_pad"):
            raise ModelError(f"graph '{graph.name}': node '{node.name}' (avgpool): padded average "
                             f"pooling needs count_include_pad=1 on the accelerator")
    last = [n for n in graph.nodes if n.op not in ("flatten", "transpose")]
    produced = {t for n in graph.nodes for t in n.outputs}
    if not last or graph.outputs[0] not in produced:
        raise ModelError(f"graph '{graph.name}': the graph output is not computed by any layer")


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


def _degenerate(msg: str, on_degenerate: str) -> None:
    """Report one problem of the calibration data as ``on_degenerate`` says."""
    if on_degenerate == "error":
        raise InputError(msg)
    if on_degenerate == "warn":
        warnings.warn(msg, CalibrationWarning, stacklevel=4)  # the caller of quantize_graph


def _check_calib_input(in_name: str, calib: np.ndarray, on_degenerate: str) -> bool:
    """Warn about (or reject) a constant calibration input and too few distinct samples;
    returns whether the input is constant."""
    lo, hi = float(calib.min()), float(calib.max())
    if lo == hi:
        _degenerate(f"calibration data for input '{in_name}' is constant (every value is {lo:g}): "
                    f"every tensor's range is calibrated on one point, so real inputs saturate or "
                    f"round to it; give representative samples", on_degenerate)
    n = len(calib)
    distinct = len({row.tobytes() for row in calib.reshape(n, -1)})
    if distinct < MIN_CALIB_SAMPLES:
        of = f"{n} sample(s)" + (f", {distinct} distinct" if distinct != n else "")
        _degenerate(f"calibration data for input '{in_name}' has {of}: fewer than "
                    f"{MIN_CALIB_SAMPLES} give activation ranges that new inputs exceed often "
                    f"(docs/numerics.md); give at least {MIN_CALIB_SAMPLES} representative samples",
                    on_degenerate)
    return lo == hi


def quantize_graph(graph: Graph, calib: np.ndarray, on_degenerate: str = "warn") -> QModel:
    """Quantize ``graph`` calibrating on ``calib`` (float, first axis = samples).

    ``on_degenerate``: what to do with degenerate calibration data (fewer than
    :data:`MIN_CALIB_SAMPLES` distinct samples, a constant input, a tensor whose range
    collapses to one value): ``"warn"`` (a :class:`CalibrationWarning` each, default),
    ``"error"`` (an :class:`~celosia.errors.InputError` naming the input or tensor) or
    ``"ignore"``.
    """
    if on_degenerate not in ON_DEGENERATE:
        raise ValueError(f"on_degenerate must be one of {', '.join(ON_DEGENERATE)}, not {on_degenerate!r}")
    graph = fuse_activations(graph)
    _check_graph(graph)
    in_name = graph.inputs[0]
    calib = np.asarray(calib)
    if not (np.issubdtype(calib.dtype, np.number) and not np.issubdtype(calib.dtype, np.complexfloating)):
        raise InputError(f"calibration data for input '{in_name}' must be real numbers, not {calib.dtype}")
    if calib.ndim < 1 or calib.size == 0:
        raise InputError(f"calibration data for input '{in_name}' needs at least one sample, "
                         f"got shape {list(calib.shape)}")
    if not np.isfinite(calib).all():
        raise InputError(f"calibration data for input '{in_name}' contains NaN or infinity")
    constant = _check_calib_input(in_name, calib, on_degenerate)
    values = execute_float(graph, {in_name: calib.astype(np.float32)})

    def calibrated(tensor, node=None):
        v = values[tensor]
        lo, hi = float(v.min()), float(v.max())
        if node is not None and lo == hi and not constant:  # (a constant input says it all)
            _degenerate(f"tensor '{tensor}' (output of node '{node.name}') takes only the value "
                        f"{lo:g} on the calibration data: its range collapsed to one value, so "
                        f"other values saturate or round to it; give samples that exercise it",
                        on_degenerate)
        q = choose_activation_qparams(lo, hi)
        return float(q.scale), int(q.zero_point)

    try:
        in_q = calibrated(in_name)
    except ValueError as e:
        raise InputError(f"calibration data for input '{in_name}': {e}") from None
    # Hardware tensor of every graph tensor (flatten / the input transpose move no data),
    # and the (scale, zero point) of every hardware tensor.
    alias = {in_name: QModel.INPUT}
    qp = {QModel.INPUT: in_q}
    layout = "flat"
    layers = []
    for node in graph.nodes:
        srcs = [alias[t] for t in graph.fmap_inputs(node)]
        if node.op in ("transpose", "flatten"):
            layout = "NCHW" if node.op == "transpose" else layout
            alias[node.outputs[0]] = srcs[0]
            continue
        out = node.outputs[0]
        if node.op == "maxpool":
            qp[out] = qp[srcs[0]]  # max pooling keeps its input's scale and zero point
        else:
            qp[out] = calibrated(out, node)
        try:
            layer = _QUANTIZERS[node.op](graph, node, [qp[s] for s in srcs], qp[out])
        except ValueError as e:  # the PTQ helpers report bad weights / ranges as ValueError
            raise ModelError(f"graph '{graph.name}': node '{node.name}' ({node.op}): "
                             f"cannot quantize: {e}") from None
        layer.inputs, layer.output = srcs, out
        if layer.is_gemm:
            layer.in_zeros = _zero_fraction(values[graph.fmap_inputs(node)[0]], qp[srcs[0]][0])
        alias[out] = out
        layers.append(layer)
    if alias[graph.outputs[0]] != layers[-1].output:
        raise ModelError(f"graph '{graph.name}': the last layer must produce the graph output")
    shape = graph.tensors[in_name].shape[1:]
    return QModel(name=graph.name, layers=layers, input_scale=in_q[0], input_zp=in_q[1],
                  input_shape=tuple(shape), input_layout=layout)


def _zero_fraction(v: np.ndarray, scale: float) -> float:
    """The fraction of the float values ``v`` that quantize to the zero point at ``scale``
    (``round(v / scale) == 0``, TFLite's rounding: ``|v| < scale / 2``): a layer's
    :attr:`~celosia.sw.quant.model.QLayer.in_zeros` on the calibration data."""
    return float(np.mean(np.abs(np.asarray(v, np.float64)) < 0.5 * float(scale))) if np.size(v) else 0.0


def _act_range(act, scale: float, zp: int) -> tuple[int, int]:
    """The int8 clamp of a fused activation (``None``, relu, relu6 or ``("clip", lo, hi)``)."""
    if isinstance(act, (tuple, list)) and act and act[0] == "clip":
        lo, hi = float(act[1]), float(act[2])
        q = lambda f: int(round_half_away_from_zero(np.float32(f) / np.float32(scale))) + zp  # noqa: E731
        return max(-128, q(lo)), min(127, q(hi))
    return activation_range(act or "none", scale, zp)


def _shape(graph: Graph, tensor: str) -> tuple:
    return tuple(int(d) for d in graph.tensors[tensor].shape[1:])


def _quantize_conv(graph: Graph, node, in_qps, out_qp) -> QLayer:
    """One conv node: per-output-channel weights ``[Cout, Fh, Fw, Cin/groups]``."""
    (cur_scale, cur_zp), = in_qps
    w = graph.const(node.inputs[1])
    cout = w.shape[0]
    bias = graph.const(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(cout, np.float32)
    w2 = np.ascontiguousarray(w.reshape(cout, -1).T)   # [K, Cout]: per-column = per channel
    w_q2, w_scales = quantize_weights_per_channel(w2, axis=1)
    w_q2, w_scales = _fit_bias(w2, w_q2, w_scales, bias, cur_scale)
    out_scale, out_zp = out_qp
    m0, shift = requant_params(np.float32(cur_scale), w_scales, np.float32(out_scale))
    act = node.attrs.get("activation")
    act_min, act_max = _act_range(act, out_scale, out_zp)
    attrs = {k: node.attrs[k] for k in ("stride", "pads", "groups", "dilation") if k in node.attrs}
    return QLayer(
        name=node.name, op="conv", w=np.ascontiguousarray(w_q2.T).reshape(w.shape),
        bias=quantize_bias(bias, np.float32(cur_scale), w_scales), m0=m0, shift=shift,
        in_scale=cur_scale, in_zp=cur_zp, out_scale=out_scale, out_zp=out_zp,
        act_min=int(act_min), act_max=int(act_max), activation=str(act or "none"),
        w_scale=w_scales, attrs=attrs, in_shape=_shape(graph, graph.fmap_inputs(node)[0]),
        out_shape=_shape(graph, node.outputs[0]))


def _quantize_fc(graph: Graph, node, in_qps, out_qp) -> QLayer:
    """One fc node as a :class:`QLayer`."""
    (cur_scale, cur_zp), = in_qps
    w = graph.const(node.inputs[1])
    bias = graph.const(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(w.shape[1], np.float32)
    w_q, w_scales = quantize_weights_per_channel(w, axis=1)
    w_q, w_scales = _fit_bias(w, w_q, w_scales, bias, cur_scale)
    out_scale, out_zp = out_qp
    m0, shift = requant_params(np.float32(cur_scale), w_scales, np.float32(out_scale))
    act = node.attrs.get("activation")
    act_min, act_max = _act_range(act, out_scale, out_zp)
    act = str(act or "none")
    return QLayer(
        name=node.name, op="fc", w=w_q, bias=quantize_bias(bias, np.float32(cur_scale), w_scales),
        m0=m0, shift=shift, in_scale=cur_scale, in_zp=cur_zp, out_scale=out_scale,
        out_zp=out_zp, act_min=int(act_min), act_max=int(act_max), activation=act,
        w_scale=w_scales)


def _vec_layer(graph, node, op, in_qp, out_qp, m0, shift, attrs, act=None) -> QLayer:
    out_shape = _shape(graph, node.outputs[0])
    C = out_shape[-1]
    act_min, act_max = _act_range(act, out_qp[0], out_qp[1])
    return QLayer(name=node.name, op=op, w=np.zeros(0, np.int8), bias=np.zeros(C, np.int32),
                  m0=np.full(C, m0, np.int32), shift=np.full(C, shift, np.int32),
                  in_scale=in_qp[0], in_zp=in_qp[1], out_scale=out_qp[0], out_zp=out_qp[1],
                  act_min=int(act_min), act_max=int(act_max), activation=str(act or "none"),
                  attrs=attrs, in_shape=_shape(graph, graph.fmap_inputs(node)[0]),
                  out_shape=out_shape)


def _quantize_maxpool(graph, node, in_qps, out_qp) -> QLayer:
    a = node.attrs
    attrs = {"kernel": tuple(a["kernel"]), "stride": tuple(a.get("stride") or a["kernel"]),
             "pads": tuple(a.get("pads", (0, 0, 0, 0))), "ceil_mode": bool(a.get("ceil_mode", False))}
    return _vec_layer(graph, node, "maxpool", in_qps[0], out_qp, 1 << 30, 1, attrs)  # identity


def _quantize_avgpool(graph, node, in_qps, out_qp) -> QLayer:
    a = node.attrs
    kh, kw = a["kernel"]
    m0, shift = golden.global_avg_pool_params(in_qps[0][0], out_qp[0], kh * kw)
    attrs = {"kernel": (kh, kw), "stride": tuple(a.get("stride") or a["kernel"]),
             "pads": tuple(a.get("pads", (0, 0, 0, 0)))}
    return _vec_layer(graph, node, "avgpool", in_qps[0], out_qp, m0, shift, attrs)


def _quantize_gap(graph, node, in_qps, out_qp) -> QLayer:
    h, w, _ = _shape(graph, graph.fmap_inputs(node)[0])
    m0, shift = golden.global_avg_pool_params(in_qps[0][0], out_qp[0], h * w)
    return _vec_layer(graph, node, "gap", in_qps[0], out_qp, m0, shift, {})


def _quantize_add(graph, node, in_qps, out_qp) -> QLayer:
    (a_scale, a_zp), (b_scale, b_zp) = in_qps
    p = golden.add_params(a_scale, b_scale, out_qp[0])
    attrs = {"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
             "b_shift": p["b_shift"], "b_zp": b_zp, "left_shift": p["left_shift"]}
    return _vec_layer(graph, node, "add", (a_scale, a_zp), out_qp, p["out_m0"], p["out_shift"],
                      attrs, node.attrs.get("activation"))


_QUANTIZERS = {"fc": _quantize_fc, "conv": _quantize_conv, "maxpool": _quantize_maxpool,
               "avgpool": _quantize_avgpool, "gap": _quantize_gap, "add": _quantize_add}
