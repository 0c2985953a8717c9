"""Import of int8 ``.tflite`` models straight into a :class:`~celosia.sw.quant.QModel`.

A model that is already quantized needs no graph IR and no calibration: every
integer the accelerator uses (int8 weights, int32 bias, per-channel ``M0`` /
``shift``, zero points, activation clamps) follows from the file's tensors,
scales and zero points by TFLite's own formulas, so the golden model, the ISA
simulator and the RTL compute what LiteRT's reference kernels compute, bit for
bit, except where LiteRT's FULLY_CONNECTED rounds differently (below;
``tests/sw/test_tflite.py`` checks every op against ``ai-edge-litert`` with
``OpResolverType.BUILTIN_REF``).

Operator mapping (TFLite kernel -> :class:`~celosia.sw.quant.QLayer`):

``CONV_2D``
    ``conv``; the filter is OHWI like Celosia's; per-channel (or per-tensor)
    ``QuantizeMultiplier(S_in * S_w[c] / S_out)`` in double, as
    ``PopulateConvolutionQuantizationParams``; SAME padding split as TFLite's
    ``ComputePaddingWithOffset`` (the odd pixel at the bottom / right).
``DEPTHWISE_CONV_2D``
    ``conv`` with ``groups = C_in`` (filter ``[1, Fh, Fw, C_out]`` -> ``[C_out, Fh, Fw, 1]``).
``FULLY_CONNECTED``
    ``fc`` with the filter transposed to ``[K, N]``; the input is flattened in
    NHWC order (TFLite's row-major view); per-tensor filters get the multiplier
    of ``GetQuantizedConvolutionMultipler``. LiteRT (measured with ai-edge-litert
    2.3, reference kernels) requantizes FULLY_CONNECTED with TFLite's single
    rounding, ``(acc * M0 + 2^(30 - shift)) >> (31 - shift)`` (its CONV_2D with
    gemmlowp's double rounding), so the layer gets ``rounding = "single"``: the
    PPU's single-rounding mode (STORE ``single_round``).
``ADD``
    ``add``: the vector engine runs TFLite's int8 Add exactly (both inputs shifted
    left by 20, ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` per input and
    for the output). Broadcasting is not supported.
``MAX_POOL_2D``
    ``maxpool`` (input and output must share scale and zero point, as in TFLite).
``AVERAGE_POOL_2D``
    ``avgpool``. TFLite divides the sum of the raw int8 values by the tap count,
    rounding half away from zero. The PPU multiplies instead, so the importer
    picks ``(M0, shift)`` with ``MBQM(acc, M0, shift) == round(acc / n)`` for every
    ``acc`` an int8 window can produce (checked exhaustively at import) and runs
    the layer with zero points 0 (the sum of raw values, as TFLite). A padded
    window (SAME with a tap count that varies) has no such mapping: rejected.
``MEAN`` over H, W
    ``gap``: TFLite's reference ``QuantizedMeanOrSum`` folds the division into the
    multiplier (``M0' = (M0 << s) / n``, ``shift' = shift - s``, ``s =
    min(floor(log2 n), 32, 31 + shift)``) and applies one ``MultiplyByQuantized
    Multiplier`` to ``sum (x - Z_in)``: exactly the PPU's requantization.
``PAD`` before ``CONV_2D`` / ``DEPTHWISE_CONV_2D``
    folded into the convolution's padding (TFLite's int8 PAD writes the zero point,
    which the accelerator's padding contributes as 0 too): how converters write
    padding that is neither VALID nor SAME.
``RESHAPE``
    moves no data (both sides are row-major NHWC); the shape comes from the
    output tensor, so the converter's shape plumbing (``SHAPE``,
    ``STRIDED_SLICE``, ``PACK``, ``CONCATENATION`` computing a RESHAPE's shape
    input) is folded away.
``QUANTIZE`` / ``DEQUANTIZE``
    at the edges: a float input quantized by the first op (the model then takes
    float input, quantized with that op's parameters) and a float output
    dequantized by the last one. An int8 -> int8 QUANTIZE inside the model (a
    requantization) is a one-tap ``avgpool`` with ``QuantizeMultiplier(S_in / S_out)``.
Fused ``RELU`` / ``RELU6`` / ``RELU_N1_TO_1``
    the clamp of ``CalculateActivationRangeQuantized``.

Anything else is a :class:`~celosia.errors.ModelError` naming the op or tensor:
float models, int16 activations (16x8 quantization), non-zero weight zero points
(the arrays multiply symmetric weights), unknown ops.

Other quantized formats (ONNX QDQ / QOperator, QONNX) reuse this path: they
describe the same objects (int8 tensors with scale and zero point, ops with
fused activations), so an importer for them builds the same :class:`QuantTensor`
records and calls the shared layer constructors :func:`conv_layer`,
:func:`fc_layer` and :func:`vector_layer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celosia.errors import ModelError
from celosia.sim import golden
from celosia.sim.golden import activation_range
from celosia.sw.quant.model import QLayer, QModel
from celosia.sw.quant.ptq import requant_params

__all__ = ["load_tflite", "SUPPORTED_OPS", "QuantTensor", "conv_layer", "fc_layer", "vector_layer",
           "avgpool_multiplier", "mean_multiplier"]

#: TFLite builtin ops the importer maps (plus the folded shape plumbing).
SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MAX_POOL_2D",
                 "AVERAGE_POOL_2D", "MEAN", "RESHAPE", "PAD", "QUANTIZE", "DEQUANTIZE")
#: Ops that only compute shapes; folded when they feed nothing but a RESHAPE's shape.
PLUMBING_OPS = ("SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "CAST")

_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool",
          7: "int16", 9: "int8", 17: "int4"}
_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}


@dataclass
class QuantTensor:
    """One tensor of a quantized model file: name, shape (with the batch dimension), dtype,
    quantization (``scale`` / ``zero_point`` per tensor or per channel along ``qdim``) and,
    for a constant, its data."""
    index: int
    name: str
    shape: tuple
    dtype: str
    scale: np.ndarray            # float32 [1] or [C]; empty = not quantized
    zero_point: np.ndarray       # int64, same length as scale
    qdim: int = 0
    data: np.ndarray | None = None

    @property
    def per_sample(self) -> tuple:
        return tuple(int(d) for d in self.shape[1:])

    @property
    def qparams(self) -> tuple[float, int]:
        """Per-tensor ``(scale, zero_point)`` of an activation."""
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class _Op:
    """One operator of the file: its index (error messages name it), builtin name, tensor
    indices (-1 = omitted optional input) and builtin options table."""
    index: int
    code: str
    inputs: list
    outputs: list
    options: object = None


def _err(where: str, msg: str) -> ModelError:
    return ModelError(f"{where}: {msg}")


def _read(path: Path):
    """The flatbuffer's subgraph 0 as (tensors, ops, inputs, outputs)."""
    try:
        import tflite
        from tflite.BuiltinOperator import BuiltinOperator
    except ImportError:  # pragma: no cover - tflite is a dependency
        raise ModelError(f"{path}: reading .tflite files needs the 'tflite' package "
                         f"(pip install tflite)") from None
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() < 1:
            raise ModelError(f"{path}: the model has no subgraph")
        sg = model.Subgraphs(0)
        names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            codes.append(names.get(code, f"builtin {code}") if code != BuiltinOperator.CUSTOM
                         else f"CUSTOM '{(oc.CustomCode() or b'').decode(errors='replace')}'")
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            name = (t.Name() or b"").decode(errors="replace") or f"tensor{i}"
            q = t.Quantization()
            scale = np.zeros(0, np.float32)
            zp = np.zeros(0, np.int64)
            qdim = 0
            if q is not None and q.ScaleLength():
                scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float32)
                zp = (np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64) if q.ZeroPointLength()
                      else np.zeros(len(scale), np.int64))
                qdim = int(q.QuantizedDimension())
            dtype = _TYPES.get(int(t.Type()), f"type {int(t.Type())}")
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            data = None
            b = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
            if b is not None and b.DataLength() and dtype in ("int8", "int32", "int64", "float32",
                                                              "int16", "uint8"):
                data = np.frombuffer(b.DataAsNumpy().tobytes(), dtype=dtype).reshape(shape)
            elif b is not None and b.Offset():
                raise ModelError(f"{path}: tensor '{name}': data stored outside the flatbuffer "
                                 f"(models over 2 GB) is not supported")
            tensors.append(QuantTensor(i, name, shape, dtype, scale, zp, qdim, data))
        ops = []
        for i in range(sg.OperatorsLength()):
            o = sg.Operators(i)
            code = codes[o.OpcodeIndex()]
            ops.append(_Op(i, code, [int(v) for v in o.InputsAsNumpy()] if o.InputsLength() else [],
                           [int(v) for v in o.OutputsAsNumpy()] if o.OutputsLength() else [],
                           _options(o, code)))
        inputs = [int(v) for v in sg.InputsAsNumpy()] if sg.InputsLength() else []
        outputs = [int(v) for v in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    except ModelError:
        raise
    except Exception as e:  # a truncated or corrupt flatbuffer
        raise ModelError(f"{path}: cannot parse the TFLite flatbuffer ({type(e).__name__}: {e})") from None
    return tensors, ops, inputs, outputs


_OPTION_TABLES = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                  "FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions",
                  "MAX_POOL_2D": "Pool2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions",
                  "MEAN": "ReducerOptions"}


def _options(o, code: str):
    """The op's builtin options table (``None`` if it has none)."""
    import importlib
    table = _OPTION_TABLES.get(code)
    if table is None or o.BuiltinOptions() is None:
        return None
    cls = getattr(importlib.import_module(f"tflite.{table}"), table)
    opt = cls()
    tab = o.BuiltinOptions()
    opt.Init(tab.Bytes, tab.Pos)
    return opt


# -- shared layer constructors (reusable by other quantized-format importers) ------------

def _multipliers(where: str, in_scale: float, w_scale: np.ndarray, out_scale: float):
    try:
        return requant_params(np.float32(in_scale), np.asarray(w_scale, np.float32),
                              np.float32(out_scale))
    except ValueError as e:
        raise _err(where, str(e)) from None


def _clamp(where: str, act: str, out_scale: float, out_zp: int) -> tuple[int, int]:
    try:
        return activation_range(act, out_scale, out_zp)
    except ValueError as e:
        raise _err(where, str(e)) from None


def conv_layer(name: str, w: np.ndarray, bias: np.ndarray, w_scale: np.ndarray, in_q, out_q,
               act: str, attrs: dict, in_shape: tuple, out_shape: tuple) -> QLayer:
    """A ``conv`` :class:`QLayer` from int8 OHWI weights, int32 bias and the tensors' qparams.

    ``in_q`` / ``out_q`` are ``(scale, zero_point)``; ``w_scale`` float32 [C_out]
    (symmetric weights). ``M0`` / ``shift`` are TFLite's
    ``QuantizeMultiplier(S_in * S_w[c] / S_out)`` in double.
    """
    m0, shift = _multipliers(name, in_q[0], w_scale, out_q[0])
    lo, hi = _clamp(name, act, *out_q)
    return QLayer(name=name, op="conv", w=np.ascontiguousarray(w, np.int8),
                  bias=np.asarray(bias, np.int32), m0=m0, shift=shift, in_scale=in_q[0],
                  in_zp=in_q[1], out_scale=out_q[0], out_zp=out_q[1], act_min=lo, act_max=hi,
                  activation=act, w_scale=np.asarray(w_scale, np.float32), attrs=attrs,
                  in_shape=tuple(in_shape), out_shape=tuple(out_shape))


def fc_layer(name: str, w: np.ndarray, bias: np.ndarray, w_scale: np.ndarray, in_q, out_q,
             act: str, m0=None, shift=None, rounding: str = "double") -> QLayer:
    """An ``fc`` :class:`QLayer` from int8 ``[K, N]`` weights (see :func:`conv_layer`).

    ``m0`` / ``shift`` override the per-channel multipliers (TFLite's per-tensor
    FullyConnected forms its multiplier slightly differently); ``rounding``: the
    requantization's rounding (:attr:`~celosia.sw.quant.QLayer.rounding`).
    """
    if m0 is None:
        m0, shift = _multipliers(name, in_q[0], w_scale, out_q[0])
    lo, hi = _clamp(name, act, *out_q)
    return QLayer(name=name, op="fc", w=np.ascontiguousarray(w, np.int8),
                  bias=np.asarray(bias, np.int32), m0=np.asarray(m0, np.int32),
                  shift=np.asarray(shift, np.int32), in_scale=in_q[0], in_zp=in_q[1],
                  out_scale=out_q[0], out_zp=out_q[1], act_min=lo, act_max=hi, activation=act,
                  w_scale=np.asarray(w_scale, np.float32), rounding=rounding)


def vector_layer(name: str, op: str, in_q, out_q, m0: int, shift: int, attrs: dict, act: str,
                 in_shape: tuple, out_shape: tuple, clamp_q=None) -> QLayer:
    """A vector-engine layer (``maxpool``, ``avgpool``, ``gap``, ``add``) with one multiplier.

    ``clamp_q``: the ``(scale, zero_point)`` the fused activation's clamp is computed
    with, when it differs from ``out_q`` (the zero-point-free average pool).
    """
    lo, hi = _clamp(name, act, *(clamp_q or out_q))
    C = int(out_shape[-1])
    return QLayer(name=name, op=op, w=np.zeros(0, np.int8), bias=np.zeros(C, np.int32),
                  m0=np.full(C, m0, np.int32), shift=np.full(C, shift, np.int32),
                  in_scale=in_q[0], in_zp=in_q[1], out_scale=out_q[0], out_zp=out_q[1],
                  act_min=lo, act_max=hi, activation=act, attrs=attrs,
                  in_shape=tuple(in_shape), out_shape=tuple(out_shape))


def avgpool_multiplier(count: int) -> tuple[int, int]:
    """``(M0, shift)`` with ``MBQM(acc, M0, shift) == round_half_away(acc / count)`` for
    every ``acc`` in ``[-128 count, 127 count]`` (TFLite's int8 AveragePool division).

    ``M0 = floor(2^31 / count) + 1`` (strictly above ``2^31 / count``, so that ties of
    negative sums round away from zero too), ``shift = 0``; ``count = 1`` is the
    identity ``(2^30, 1)``. Raises ``ValueError`` where no exact pair is found.
    """
    if count == 1:
        m0, shift = 1 << 30, 1
    else:
        m0, shift = (1 << 31) // count + 1, 0
    acc = np.arange(-128 * count, 127 * count + 1, dtype=np.int64)
    half = count // 2
    want = np.where(acc > 0, (acc + half) // count, -((-acc + half) // count))
    got = golden.multiply_by_quantized_multiplier(acc, m0, shift)
    if m0 > golden.INT32_MAX or not np.array_equal(got, want):
        raise ValueError(f"no exact requantization divides by {count} taps")
    return int(m0), int(shift)


def mean_multiplier(in_scale: float, out_scale: float, count: int) -> tuple[int, int]:
    """``(M0, shift)`` of TFLite's int8 MEAN over ``count`` elements (``QuantizedMeanOrSum``).

    ``QuantizeMultiplier(S_in / S_out)`` in double, then the division folded in:
    ``s = min(floor(log2 count), 32, 31 + shift)``, ``M0' = (M0 << s) // count``,
    ``shift' = shift - s``.
    """
    m0, shift = golden.quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    s = min(int(count).bit_length() - 1, 32, 31 + shift)
    return int((m0 << s) // int(count)), int(shift - s)


# -- the importer -------------------------------------------------------------------------

def _same_pads(in_hw, out_hw, kernel, stride, dilation, padding: int) -> tuple:
    """TFLite's padding ``(top, left, bottom, right)``: SAME (0) splits the total with the
    odd pixel after; VALID (1) has none."""
    if padding != 0:
        return (0, 0, 0, 0)
    pads = []
    for n, o, k, s, d in zip(in_hw, out_hw, kernel, stride, dilation):
        total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    (t, b), (l, r) = pads
    return (t, l, b, r)


class _Importer:
    def __init__(self, path: Path):
        self.path = path
        self.tensors, self.ops, self.inputs, self.outputs = _read(path)
        self.alias: dict[int, str] = {}    # tensor index -> QModel tensor name
        self.layers: list[QLayer] = []
        self.names: set[str] = set()
        self.padded: dict[int, tuple] = {}  # PAD output -> (PAD input, (top, left, bottom, right))

    def where(self, op: _Op) -> str:
        return f"{self.path}: op #{op.index} {op.code}"

    def t(self, index: int) -> QuantTensor:
        return self.tensors[index]

    # checks

    def activation(self, op: _Op, index: int, role: str = "input") -> QuantTensor:
        """Tensor ``index`` as an int8 per-tensor-quantized feature map, or a one-line error."""
        t = self.t(index)
        where = f"{self.where(op)}: {role} tensor '{t.name}'"
        if t.dtype == "float32":
            raise ModelError(f"{where} is float32: a float TFLite model; Celosia runs int8 "
                             f"models (convert with full integer quantization), or give it the "
                             f"float ONNX model to quantize")
        if t.dtype == "int16":
            raise ModelError(f"{where} is int16 (16x8 quantization): the accelerator takes int8 "
                             f"activations")
        if t.dtype != "int8":
            raise ModelError(f"{where} has type {t.dtype}; only int8 activations are supported")
        if len(t.scale) != 1:
            raise ModelError(f"{where} has {len(t.scale) or 'no'} scales; an activation needs one "
                             f"(per-tensor) scale and zero point")
        if not (np.isfinite(t.scale).all() and t.scale[0] > 0):
            raise ModelError(f"{where} has scale {t.scale[0]!r}; scales must be finite and > 0")
        if not -128 <= t.zero_point[0] <= 127:
            raise ModelError(f"{where} has zero point {t.zero_point[0]} outside -128..127")
        return t

    def weights(self, op: _Op, index: int, channels: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """(int8 data, float32 [channels] scales) of a symmetric int8 filter."""
        t = self.t(index)
        where = f"{self.where(op)}: filter tensor '{t.name}'"
        if t.data is None:
            raise ModelError(f"{where} is not a constant; the accelerator needs constant weights")
        if t.dtype != "int8":
            raise ModelError(f"{where} has type {t.dtype}; the accelerator needs int8 weights"
                             + (" (a float TFLite model: convert with full integer quantization)"
                                if t.dtype == "float32" else ""))
        if len(t.scale) not in (1, channels) or (len(t.scale) > 1 and t.qdim != axis):
            raise ModelError(f"{where} has {len(t.scale)} scales along dimension {t.qdim}; "
                             f"expected 1 or {channels} along dimension {axis}")
        if np.any(t.zero_point != 0):
            raise ModelError(f"{where} has zero point {int(t.zero_point[t.zero_point != 0][0])}: "
                             f"asymmetric weights; the accelerator needs symmetric int8 weights "
                             f"(zero point 0)")
        if not (np.isfinite(t.scale).all() and (t.scale > 0).all()):
            raise ModelError(f"{where} has a scale that is not finite and > 0")
        return t.data, np.broadcast_to(t.scale, (channels,)).astype(np.float32)

    def bias(self, op: _Op, index: int, channels: int) -> np.ndarray:
        if index < 0:
            return np.zeros(channels, np.int32)
        t = self.t(index)
        if t.dtype != "int32" or t.data is None or t.data.size != channels:
            raise ModelError(f"{self.where(op)}: bias tensor '{t.name}' must be a constant int32 "
                             f"[{channels}], not {t.dtype} {list(t.shape)}")
        return t.data.reshape(channels).astype(np.int32)

    def src(self, op: _Op, index: int) -> str:
        if index in self.padded:
            raise ModelError(f"{self.where(op)}: input tensor '{self.t(index).name}' comes from a "
                             f"PAD; only CONV_2D and DEPTHWISE_CONV_2D absorb a PAD")
        if index not in self.alias:
            raise ModelError(f"{self.where(op)}: input tensor '{self.t(index).name}' is not computed "
                             f"by a supported op before it")
        return self.alias[index]

    def act(self, op: _Op) -> str:
        code = int(op.options.FusedActivationFunction()) if op.options is not None else 0
        if code not in _ACTIVATIONS:
            raise ModelError(f"{self.where(op)}: fused activation {code} (TANH / SIGN_BIT) is not "
                             f"supported; RELU, RELU6 and RELU_N1_TO_1 are")
        return _ACTIVATIONS[code]

    def emit(self, op: _Op, layer: QLayer, srcs: list[str]) -> None:
        out = self.t(op.outputs[0])
        base = out.name.split(";")[0] or f"op{op.index}"
        name = base if base not in self.names else f"{base}#{op.index}"
        self.names.add(name)
        layer.name = layer.output = name
        layer.inputs = srcs
        self.alias[out.index] = name
        self.layers.append(layer)

    # ops

    def _conv_geometry(self, op, x, y, fh, fw):
        o = op.options
        stride = (int(o.StrideH()), int(o.StrideW()))
        dilation = (int(o.DilationHFactor()), int(o.DilationWFactor()))
        pads = _same_pads(x.per_sample[:2], y.per_sample[:2], (fh, fw), stride, dilation,
                          int(o.Padding()))
        try:
            ho, wo = (golden.conv_output_size(n, k, s, p0, p1, d) for n, p0, p1, k, s, d in
                      zip(x.per_sample[:2], pads[:2], pads[2:], (fh, fw), stride, dilation))
        except ValueError as e:
            raise _err(self.where(op), str(e)) from None
        if (ho, wo) != y.per_sample[:2]:
            raise ModelError(f"{self.where(op)}: output tensor '{y.name}' has shape {list(y.shape)}, "
                             f"but the op's geometry gives {ho}x{wo}")
        return dict(stride=stride, pads=pads, dilation=dilation, groups=1)

    def op_conv(self, op: _Op, depthwise: bool = False):
        x = self.activation(op, op.inputs[0])
        y = self.activation(op, op.outputs[0], "output")
        if len(x.shape) != 4 or len(y.shape) != 4:
            raise ModelError(f"{self.where(op)}: expects 4-D NHWC input and output, got "
                             f"{list(x.shape)} -> {list(y.shape)}")
        cout = y.shape[3]
        data, w_scale = self.weights(op, op.inputs[1], cout, 3 if depthwise else 0)
        bias = self.bias(op, op.inputs[2] if len(op.inputs) > 2 else -1, cout)
        if depthwise:
            _, fh, fw, _ = data.shape
            w = data[0].transpose(2, 0, 1)[..., None]    # [C_out, Fh, Fw, 1]
        else:
            w = data
            _, fh, fw, cin = data.shape
            if cin != x.shape[3]:
                raise ModelError(f"{self.where(op)}: filter has {cin} input channels, input "
                                 f"'{x.name}' {x.shape[3]}")
        attrs = self._conv_geometry(op, x, y, fh, fw)
        if x.index in self.padded:  # an explicit PAD before the conv: its padding, inserted as Z_in
            src, extra = self.padded[x.index]
            attrs["pads"] = tuple(int(a + b) for a, b in zip(attrs["pads"], extra))
            x = self.t(src)
        if depthwise:
            if cout % x.shape[3]:
                raise ModelError(f"{self.where(op)}: {cout} output channels are not a multiple of "
                                 f"the {x.shape[3]} input channels")
            attrs["groups"] = int(x.shape[3])
        self.emit(op, conv_layer("", w, bias, w_scale, x.qparams, y.qparams, self.act(op), attrs,
                                 x.per_sample, y.per_sample), [self.src(op, x.index)])

    def op_depthwise_conv_2d(self, op: _Op):
        self.op_conv(op, depthwise=True)

    op_conv_2d = op_conv

    def op_fully_connected(self, op: _Op):
        x = self.activation(op, op.inputs[0])
        y = self.activation(op, op.outputs[0], "output")
        if op.options is not None and int(op.options.WeightsFormat()) != 0:
            raise ModelError(f"{self.where(op)}: shuffled weights format is not supported")
        n = int(self.t(op.inputs[1]).shape[0])
        data, w_scale = self.weights(op, op.inputs[1], n, 0)
        k = int(data.shape[1])
        if int(np.prod(x.per_sample)) != k:
            raise ModelError(f"{self.where(op)}: input '{x.name}' {list(x.shape)} is not one "
                             f"vector of {k} features per sample (per-position FC is not supported)")
        bias = self.bias(op, op.inputs[2] if len(op.inputs) > 2 else -1, n)
        m0 = shift = None
        if len(self.t(op.inputs[1]).scale) == 1:
            # GetQuantizedConvolutionMultipler: (double)(S_in * S_w) / S_out, product in float32.
            real = float(np.float32(x.qparams[0]) * np.float32(w_scale[0])) / float(np.float32(y.qparams[0]))
            try:
                m0, shift = golden.quantize_multiplier(real)
            except ValueError as e:
                raise _err(self.where(op), str(e)) from None
            m0, shift = np.full(n, m0, np.int32), np.full(n, shift, np.int32)
        # LiteRT's FULLY_CONNECTED requantizes with TFLite's single rounding (its CONV_2D with
        # the double one): the PPU's single-rounding mode (STORE single_round)
        layer = fc_layer("", data.T, bias, w_scale, x.qparams, y.qparams, self.act(op), m0, shift,
                         rounding="single")
        self.emit(op, layer, [self.src(op, x.index)])

    def op_add(self, op: _Op):
        a = self.activation(op, op.inputs[0])
        b = self.activation(op, op.inputs[1])
        y = self.activation(op, op.outputs[0], "output")
        if a.shape != b.shape or a.shape != y.shape:
            raise ModelError(f"{self.where(op)}: broadcasting Add ({list(a.shape)} + "
                             f"{list(b.shape)}) is not supported; the inputs must have one shape")
        try:
            p = golden.add_params(a.qparams[0], b.qparams[0], y.qparams[0])
        except ValueError as e:
            raise _err(self.where(op), str(e)) from None
        attrs = {"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
                 "b_shift": p["b_shift"], "b_zp": b.qparams[1], "left_shift": p["left_shift"]}
        shape = a.per_sample if len(a.per_sample) == 3 else (1, 1, int(np.prod(a.per_sample)))
        self.emit(op, vector_layer("", "add", a.qparams, y.qparams, p["out_m0"], p["out_shift"],
                                   attrs, self.act(op), shape, shape),
                  [self.src(op, a.index), self.src(op, b.index)])

    def _pool(self, op: _Op):
        x = self.activation(op, op.inputs[0])
        y = self.activation(op, op.outputs[0], "output")
        o = op.options
        kernel = (int(o.FilterHeight()), int(o.FilterWidth()))
        stride = (int(o.StrideH()), int(o.StrideW()))
        pads = _same_pads(x.per_sample[:2], y.per_sample[:2], kernel, stride, (1, 1), int(o.Padding()))
        if x.qparams != y.qparams:
            raise ModelError(f"{self.where(op)}: input '{x.name}' and output '{y.name}' have "
                             f"different scale / zero point ({x.qparams} vs {y.qparams}); TFLite's "
                             f"int8 pooling keeps them equal")
        return x, y, {"kernel": kernel, "stride": stride, "pads": pads}

    def op_max_pool_2d(self, op: _Op):
        x, y, attrs = self._pool(op)
        self.emit(op, vector_layer("", "maxpool", x.qparams, y.qparams, 1 << 30, 1, attrs,
                                   self.act(op), x.per_sample, y.per_sample),
                  [self.src(op, x.index)])

    def op_average_pool_2d(self, op: _Op):
        x, y, attrs = self._pool(op)
        if any(attrs["pads"]):
            raise ModelError(f"{self.where(op)}: SAME padding that pads ({attrs['pads']}) divides "
                             f"by a tap count that varies per window; the accelerator's average "
                             f"pool needs VALID padding (or SAME that adds no padding)")
        count = attrs["kernel"][0] * attrs["kernel"][1]
        try:
            m0, shift = avgpool_multiplier(count)
        except ValueError as e:
            raise _err(self.where(op), str(e)) from None
        # TFLite sums the raw int8 values: zero points 0 on the hardware, the real ones for the clamp.
        self.emit(op, vector_layer("", "avgpool", (x.qparams[0], 0), (y.qparams[0], 0), m0, shift,
                                   attrs, self.act(op), x.per_sample, y.per_sample,
                                   clamp_q=y.qparams), [self.src(op, x.index)])

    def op_mean(self, op: _Op):
        x = self.activation(op, op.inputs[0])
        y = self.activation(op, op.outputs[0], "output")
        axis = self.t(op.inputs[1]).data
        axes = sorted({int(a) % 4 for a in np.atleast_1d(axis)}) if axis is not None else None
        if len(x.shape) != 4 or axes != [1, 2]:
            raise ModelError(f"{self.where(op)}: only MEAN over H and W of a 4-D NHWC tensor is "
                             f"supported, not axes {None if axis is None else axis.tolist()} of "
                             f"{list(x.shape)}")
        h, w, c = x.per_sample
        try:
            m0, shift = mean_multiplier(x.qparams[0], y.qparams[0], h * w)
        except ValueError as e:
            raise _err(self.where(op), str(e)) from None
        self.emit(op, vector_layer("", "gap", x.qparams, y.qparams, m0, shift, {}, "none",
                                   x.per_sample, (1, 1, c)), [self.src(op, x.index)])

    def op_pad(self, op: _Op):
        """PAD (int8: pads with the output zero point) feeding a convolution: folded into its
        padding, which the accelerator inserts as the input zero point (contributing 0)."""
        x = self.activation(op, op.inputs[0])
        y = self.activation(op, op.outputs[0], "output")
        p = self.t(op.inputs[1]).data
        if p is None or p.shape != (4, 2) or p[0].any() or p[3].any() or (p < 0).any():
            raise ModelError(f"{self.where(op)}: only constant, non-negative padding of H and W "
                             f"of a 4-D NHWC tensor is supported")
        if x.qparams != y.qparams or len(op.inputs) > 2:
            raise ModelError(f"{self.where(op)}: the padding must be the zero point of the input "
                             f"(no PADV2 constant, same quantization in and out)")
        users = [o for o in self.ops if y.index in o.inputs]
        if not users or any(u.code not in ("CONV_2D", "DEPTHWISE_CONV_2D") or u.inputs[0] != y.index
                            for u in users):
            raise ModelError(f"{self.where(op)}: a PAD is supported only as the input of CONV_2D / "
                             f"DEPTHWISE_CONV_2D, not of {', '.join(sorted({u.code for u in users}))}")
        self.src(op, x.index)
        self.padded[y.index] = (x.index, (int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1])))

    def op_quantize(self, op: _Op):
        """int8 -> int8 QUANTIZE (a requantization, TFLite's ``Requantize``):
        ``MBQM(q - Z_in, QuantizeMultiplier(S_in / S_out)) + Z_out``, the PPU's requantization of
        a one-tap average pool."""
        x = self.activation(op, op.inputs[0])
        y = self.activation(op, op.outputs[0], "output")
        try:
            m0, shift = golden.quantize_multiplier(float(np.float32(x.qparams[0]))
                                                   / float(np.float32(y.qparams[0])))
        except ValueError as e:
            raise _err(self.where(op), str(e)) from None
        shape = x.per_sample if len(x.per_sample) == 3 else (1, 1, int(np.prod(x.per_sample)))
        attrs = {"kernel": (1, 1), "stride": (1, 1), "pads": (0, 0, 0, 0)}
        self.emit(op, vector_layer("", "avgpool", x.qparams, y.qparams, m0, shift, attrs, "none",
                                   shape, shape), [self.src(op, x.index)])

    def op_reshape(self, op: _Op):
        x, y = self.t(op.inputs[0]), self.t(op.outputs[0])
        if x.dtype == "int8" and y.dtype == "int8" and x.qparams != y.qparams:
            raise ModelError(f"{self.where(op)}: input '{x.name}' and output '{y.name}' have "
                             f"different quantization")
        self.alias[y.index] = self.src(op, x.index)

    # the whole model

    def fold_plumbing(self) -> set[int]:
        """Indices of the shape-plumbing ops that only feed RESHAPE shape inputs."""
        shape_inputs = {op.inputs[1] for op in self.ops if op.code == "RESHAPE" and len(op.inputs) > 1}
        folded: set[int] = set()
        sinks = set(shape_inputs)
        changed = True
        while changed:
            changed = False
            for op in reversed(self.ops):
                if op.index in folded or op.code not in PLUMBING_OPS:
                    continue
                if all(o in sinks for o in op.outputs):
                    folded.add(op.index)
                    sinks.update(op.inputs)
                    changed = True
        return folded

    def run(self) -> QModel:
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise ModelError(f"{self.path}: only single-input, single-output models are supported, "
                             f"not {len(self.inputs)} inputs / {len(self.outputs)} outputs")
        inp, out = self.t(self.inputs[0]), self.t(self.outputs[0])
        folded = self.fold_plumbing()
        ops = [op for op in self.ops if op.index not in folded]
        float_in = False
        if ops and ops[0].code == "QUANTIZE" and ops[0].inputs[0] == inp.index \
                and inp.dtype == "float32":
            float_in = True
            inp = self.activation(ops[0], ops[0].outputs[0], "output")
            ops = ops[1:]
        float_out = False
        if ops and ops[-1].code == "DEQUANTIZE" and ops[-1].outputs[0] == out.index:
            float_out = True
            out = self.t(ops[-1].inputs[0])
            ops = ops[:-1]
        if not ops:
            raise ModelError(f"{self.path}: the model has no op the accelerator runs")
        self.activation(ops[0], inp.index)
        self.alias[inp.index] = QModel.INPUT
        for op in ops:
            handler = getattr(self, "op_" + op.code.lower(), None)
            if handler is None:
                hint = (" (DEQUANTIZE is supported only at the model's output)"
                        if op.code == "DEQUANTIZE" else "")
                raise ModelError(f"{self.where(op)} is not supported{hint}; supported ops: "
                                 f"{', '.join(SUPPORTED_OPS)}")
            handler(op)
        if not self.layers or self.alias.get(out.index) != self.layers[-1].output:
            raise ModelError(f"{self.path}: the model output '{out.name}' must be computed by the "
                             f"last op")
        model = QModel(name=self.path.stem, layers=self.layers, input_scale=inp.qparams[0],
                       input_zp=inp.qparams[1], input_shape=inp.per_sample)
        model.meta.update(source="tflite", source_file=str(self.path), float_input=float_in,
                          float_output=float_out,
                          output_tensor=out.name, input_division="float32",
                          output_qparams=self.activation(self.ops[-1], out.index, "output").qparams)
        return model


def load_tflite(path) -> QModel:
    """Read an int8 ``.tflite`` file into a :class:`~celosia.sw.quant.QModel` (no calibration).

    Raises :class:`~celosia.errors.ModelError` (one line naming the file and the op or
    tensor) for anything the accelerator cannot run exactly: see the module docstring.
    ``model.meta``: ``source`` ``"tflite"``, ``float_input`` / ``float_output`` (the file
    quantizes its float input / dequantizes its output), ``output_qparams`` and ``input_division``
    ``"float32"`` (float input is quantized as LiteRT's QUANTIZE does it, dividing in float32).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    return _Importer(path).run()
