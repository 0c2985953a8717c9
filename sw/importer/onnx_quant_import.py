"""Import of quantized ONNX models (QDQ and QOperator formats) into a :class:`~celosia.sw.quant.QModel`.

``onnxruntime.quantization.quantize_static`` writes a quantized model in one of two
formats; both carry every scale and zero point the accelerator needs, so the
importer takes them as they are (no calibration) and builds the layers with the
TFLite importer's shared constructors (:func:`~celosia.sw.importer.tflite_import.conv_layer`,
:func:`~.fc_layer`, :func:`~.vector_layer`):

QDQ
    float ``Conv`` / ``Gemm`` / ``MatMul`` / ``Add`` / ``MaxPool`` / ``AveragePool`` /
    ``GlobalAveragePool`` / ``Flatten`` / ``Reshape`` (and ``Relu``, fused into the op
    before it) whose activation inputs are ``DequantizeLinear(q)`` of int8 tensors,
    whose weights / bias are ``DequantizeLinear`` of int8 / int32 initializers, and
    whose output feeds a ``QuantizeLinear``: one quantized op, the same as the
    QOperator node below.
QOperator
    ``QLinearConv``, ``QLinearMatMul``, ``QGemm`` (``com.microsoft``), ``QLinearAdd``,
    ``QLinearAveragePool``, ``QLinearGlobalAveragePool``, ``MaxPool`` / ``Flatten`` /
    ``Reshape`` on int8 tensors.

Both: a ``QuantizeLinear`` of the float graph input (the model then takes float
input, quantized with its scale and zero point) and a ``DequantizeLinear`` of the
output (float output) at the edges.

Mapping (ONNX is NCHW, the accelerator NHWC; the model keeps ``input_layout = "NCHW"``):

* Conv: filter OIHW -> OHWI, ``group`` as ``groups``; ``M0`` / ``shift`` =
  ``QuantizeMultiplier(S_in * S_w[c] / S_out)`` in double (TFLite's formula).
* Gemm / MatMul: ``fc`` with ``w [K, N]``; after a Flatten of an NCHW map the rows
  are permuted from (C, H, W) to (H, W, C) order (the hardware flattens NHWC).
* Add: TFLite's int8 Add (``left_shift`` 20, one multiplier per input and the output).
* AveragePool / GlobalAveragePool: the sum of ``x - Z_in`` times
  ``QuantizeMultiplier(S_in / (S_out * taps))`` (``avgpool`` / ``gap``).
* MaxPool: ``maxpool``; input and output quantization must be equal.
* Relu after a quantized op: the clamp of TFLite's ``CalculateActivationRangeQuantized``.

onnxruntime requantizes in float (``acc * (S_in S_w / S_out)`` rounded once); fc and
conv layers therefore get the PPU's single rounding (:data:`ORT_ROUNDING`) and the pools
a multiplier without a right shift (:func:`single_rounding_multiplier`): on the bundled
models no output differs from onnxruntime; exact ties (rounded to even there, away from
zero here) may differ by one step (docs/numerics.md §8 gives the measured counts).

QONNX (``Quant`` nodes) is a dialect of QDQ: :mod:`celosia.sw.importer.qonnx_import`
subclasses the reader and registers it in :data:`DIALECTS`.

Rejected with a one-line :class:`~celosia.errors.ModelError` naming the file, node
and tensor: uint8 or int16 activations, per-axis activation scales, weights with a
non-zero zero point (the arrays multiply symmetric int8 weights), non-constant
weights, unknown ops, a float op whose output is not quantized, and anything the
hardware cannot compute exactly (``auto_pad``, dilated pooling, broadcasting Add).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from celosia.errors import ModelError
from celosia.sim import golden
from celosia.sw.importer.tflite_import import conv_layer, fc_layer, vector_layer
from celosia.sw.quant.model import QLayer, QModel

__all__ = ["load_onnx_quant", "is_quantized_onnx", "QUANTIZED_OPS", "FLOAT_OPS", "QTensor", "QOp",
           "build_qmodel", "single_rounding_multiplier", "ORT_ROUNDING"]

#: Ops that mark an ONNX file as already quantized (its graph holds one of them).
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
                 "QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool", "Quant")
#: Float ops a QDQ model may wrap in QuantizeLinear / DequantizeLinear.
FLOAT_OPS = ("Conv", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Flatten", "Reshape", "Relu")

#: The requantization rounding of fc / conv layers: onnxruntime rounds ``acc * real`` once,
#: which TFLite's single-rounding MBQM matches (measured on the bundled models: 0 of 4500
#: logits differ, against 27 / 43 with the double rounding; docs/numerics.md).
ORT_ROUNDING = "single"


@dataclass
class QTensor:
    """An int8 activation of a quantized model: per-sample shape in the file's order
    (``(C, H, W)`` or ``(K,)``), per-tensor scale and zero point, and ``chw``: the
    ``(C, H, W)`` of the map a Flatten turned into this vector (the hardware holds it in
    (H, W, C) order), else ``None``."""
    name: str
    shape: tuple
    scale: float
    zp: int
    chw: tuple | None = None
    bits: int = 8
    clamp: tuple | None = None   # a narrower int8 range than -128..127 (QONNX narrow / unsigned)

    @property
    def q(self) -> tuple[float, int]:
        return self.scale, self.zp

    @property
    def nhwc(self) -> tuple:
        """Per-sample shape as the hardware holds it."""
        return (self.shape[1], self.shape[2], self.shape[0]) if len(self.shape) == 3 else self.shape


@dataclass
class QOp:
    """One quantized operator, whatever format it came from (a QOperator node, a QDQ
    group, a QONNX ``Quant``-wrapped op). ``kind``: ``conv``, ``gemm``, ``add``,
    ``maxpool``, ``avgpool``, ``gap``, ``flatten``, ``relu``; ``where``: how errors name it;
    ``w`` int weights with ``w_scale`` / ``w_zp`` along ``w_axis``, ``bias`` int32 (with
    the scale it was stored at, ``bias_scale``, when the format gives one; a float bias,
    ``bias_float``, is quantized at ``S_in * S_w`` as TFLite and onnxruntime do)."""
    kind: str
    where: str
    inputs: list
    output: str = ""
    out_q: tuple | None = None
    attrs: dict = field(default_factory=dict)
    w: np.ndarray | None = None
    w_scale: np.ndarray | None = None
    w_zp: np.ndarray | None = None
    w_axis: int = 0
    w_bits: int = 8
    bias: np.ndarray | None = None
    bias_scale: np.ndarray | None = None
    bias_float: np.ndarray | None = None
    act: str = "none"


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def is_quantized_onnx(path) -> bool:
    """Whether the ONNX file at ``path`` is already quantized: its graph holds
    QuantizeLinear / DequantizeLinear, QLinear* / QGemm or QONNX ``Quant`` nodes."""
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the float importer reports unreadable files
        return False
    return any(n.op_type in QUANTIZED_OPS for n in model.graph.node)


class _Reader:
    """Walks a QDQ / QOperator graph in file order and turns it into :class:`QOp` records."""

    #: Op domains the reader accepts.
    DOMAINS = ("", "ai.onnx", "com.microsoft")

    def __init__(self, path: Path, model):
        from onnx import numpy_helper
        self.path = path
        self.graph = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for n in self.graph.node:  # Constant nodes are initializers too
            if n.op_type == "Constant" and n.attribute:
                a = n.attribute[0]
                if a.name == "value":
                    self.init[n.output[0]] = numpy_helper.to_array(a.t)
        self.tensors: dict[str, QTensor] = {}   # int8 activations
        self.deq: dict[str, str] = {}           # float DequantizeLinear output -> int8 activation
        self.consts: dict[str, tuple] = {}      # float DequantizeLinear output of a constant
        self.const_bits: dict[str, int] = {}    # bit width of a constant's integers (QONNX)
        self.pending: dict[str, QOp] = {}       # float op output waiting for its QuantizeLinear
        self.ops: list[QOp] = []
        self.input_q: QTensor | None = None
        self.float_input = False
        self.formats: set[str] = set()
        inits = set(self.init)
        self.graph_inputs = [i for i in self.graph.input if i.name not in inits]

    # -- helpers

    def where(self, node) -> str:
        return f"{self.path}: node '{node.name or node.output[0]}' ({node.op_type})"

    def const(self, node, name: str, what: str) -> np.ndarray:
        if name not in self.init:
            raise ModelError(f"{self.where(node)}: {what} '{name}' must be a constant (initializer)")
        return self.init[name]

    def qparams(self, node, scale_name: str, zp_name: str | None, tensor: str) -> tuple[float, int]:
        """Per-tensor int8 ``(scale, zero_point)`` of activation ``tensor``, or a one-line error."""
        where = f"{self.where(node)}: tensor '{tensor}'"
        s = np.asarray(self.const(node, scale_name, "scale"))
        z = (np.asarray(self.const(node, zp_name, "zero point")) if zp_name
             else np.zeros((), np.uint8))  # ONNX: a missing zero point means uint8
        if z.dtype == np.int16 or z.dtype == np.uint16:
            raise ModelError(f"{where} is {z.dtype} (16-bit activations); the accelerator takes "
                             f"int8 activations")
        if z.dtype == np.uint8:
            raise ModelError(f"{where} is uint8; the accelerator takes int8 activations "
                             f"(quantize with activation_type=QuantType.QInt8)")
        if z.dtype != np.int8:
            raise ModelError(f"{where} has type {z.dtype}; only int8 activations are supported")
        if s.size != 1 or z.size != 1:
            raise ModelError(f"{where} has {s.size} scales (per-axis); an activation needs one "
                             f"(per-tensor) scale and zero point")
        scale = float(np.float32(s.reshape(())))
        if not (np.isfinite(scale) and scale > 0):
            raise ModelError(f"{where} has scale {scale!r}; scales must be finite and > 0")
        return scale, int(z.reshape(()))

    def weight(self, node, data, scale, zp, axis: int, what: str = "weight"):
        """(int8 data, float32 scales, zero points) of a constant filter, checked."""
        where = f"{self.where(node)}: {what}"
        data = np.asarray(data)
        if data.dtype != np.int8:
            raise ModelError(f"{where} has type {data.dtype}; the accelerator needs int8 weights")
        scale = np.atleast_1d(np.asarray(scale, np.float32))
        zp = np.atleast_1d(np.asarray(zp if zp is not None else np.zeros(1, np.int8)))
        n = data.shape[axis]
        if scale.size not in (1, n):
            raise ModelError(f"{where} has {scale.size} scales; expected 1 or {n} (one per output "
                             f"channel, axis {axis})")
        if np.any(zp != 0):
            raise ModelError(f"{where} has zero point {int(zp[zp != 0][0])}: asymmetric weights; "
                             f"the accelerator needs symmetric int8 weights (zero point 0)")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ModelError(f"{where} has a scale that is not finite and > 0")
        return data, np.broadcast_to(scale, (n,)).astype(np.float32)

    def act(self, node, name: str) -> QTensor:
        if name not in self.tensors:
            raise ModelError(f"{self.where(node)}: input '{name}' is not an int8 tensor computed by "
                             f"a supported op before it")
        return self.tensors[name]

    def add_tensor(self, name: str, shape: tuple, q: tuple, chw=None) -> QTensor:
        t = QTensor(name, tuple(int(d) for d in shape), q[0], q[1], chw)
        self.tensors[name] = t
        return t

    # -- the walk

    def source(self) -> str:
        """The format, for ``QModel.source``."""
        return "onnx-qdq" if "qdq" in self.formats else "onnx-qoperator"

    def qmodel(self, rounding: dict | None = None) -> QModel:
        """Walk the graph and build the :class:`QModel`."""
        path, graph = self.path, self.graph
        if len(self.graph_inputs) != 1 or len(graph.output) != 1:
            raise ModelError(f"{path}: only single-input, single-output models are supported, not "
                             f"{len(self.graph_inputs)} inputs / {len(graph.output)} outputs")
        self.run()
        if self.input_q is None:
            raise ModelError(f"{path}: the model input '{self.graph_inputs[0].name}' is not "
                             f"quantized by a {self.QUANTIZER}")
        out = graph.output[0].name
        float_out = out in self.deq
        out_q = self.deq[out] if float_out else out
        if out_q not in self.tensors:
            raise ModelError(f"{path}: the model output '{out}' is not an int8 tensor (or its "
                             f"DequantizeLinear)")
        qm = build_qmodel(path.stem, self.ops, self.tensors, self.input_q, out_q, rounding)
        qm.meta.update(source=self.source(), source_file=str(path), float_input=self.float_input,
                       float_output=float_out, output_tensor=out, input_division="float32",
                       output_qparams=self.tensors[out_q].q)
        return qm

    #: The op that quantizes the model input (error messages).
    QUANTIZER = "QuantizeLinear"

    def run(self) -> None:
        for node in self.graph.node:
            op = node.op_type
            if op == "Constant":
                continue
            if node.domain not in self.DOMAINS:
                raise ModelError(f"{self.where(node)}: op domain '{node.domain}' is not supported")
            handler = getattr(self, "op_" + op, None)
            if handler is None:
                raise ModelError(f"{self.where(node)} is not supported; supported ops: "
                                 f"QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, "
                                 f"QGemm, QLinearAdd, QLinearAveragePool, "
                                 f"QLinearGlobalAveragePool and, between DequantizeLinear and "
                                 f"QuantizeLinear, {', '.join(FLOAT_OPS)}")
            handler(node)
        if self.pending:
            name, op = next(iter(self.pending.items()))
            raise ModelError(f"{op.where}: output '{name}' is not quantized (no QuantizeLinear "
                             f"follows it); the accelerator computes int8 tensors only")

    def op_QuantizeLinear(self, node):
        x, y = node.input[0], node.output[0]
        q = self.qparams(node, node.input[1], node.input[2] if len(node.input) > 2 else None, y)
        if x in self.pending:  # the output of a float op: a QDQ group is complete
            rec = self.pending.pop(x)
            rec.output, rec.out_q = y, q
            self.emit(rec)
            return
        if self.requantized(node, x, y, q):
            return
        if self.input_q is None and x in {i.name for i in self.graph_inputs}:
            shape = self._input_shape(node, x)
            self.input_q = self.add_tensor(y, shape, q)
            self.input_name = x
            self.float_input = True
            return
        raise ModelError(f"{self.where(node)}: its input '{x}' is neither the model input nor the "
                         f"output of a supported op (a QuantizeLinear inside an int8 graph, a "
                         f"requantization, is not supported)")

    def _input_shape(self, node, name: str) -> tuple:
        vi = next(i for i in self.graph_inputs if i.name == name)
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim]
        if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
            raise ModelError(f"{self.where(node)}: model input '{name}' needs a static shape "
                             f"[batch, ...], not {dims}")
        return tuple(dims[1:])

    def op_DequantizeLinear(self, node):
        x, y = node.input[0], node.output[0]
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if x in self.init:  # a weight or a bias
            scale = np.asarray(self.const(node, node.input[1], "scale"), np.float32)
            z = np.asarray(self.const(node, zp, "zero point")) if zp else None
            self.consts[y] = (self.init[x], scale, z, int(_attrs(node).get("axis", 1)), node, x)
            return
        t = self.act(node, x)
        if self.qparams(node, node.input[1], zp, x) != t.q:
            raise ModelError(f"{self.where(node)}: dequantizes '{x}' with another scale / zero "
                             f"point than it was quantized with")
        self.deq[y] = x

    # QDQ: float ops between DequantizeLinear and QuantizeLinear

    def fin(self, node, i: int) -> QTensor:
        name = node.input[i]
        if name not in self.deq:
            raise ModelError(f"{self.where(node)}: input '{name}' does not come from a "
                             f"DequantizeLinear of an int8 tensor (a float op outside QDQ)")
        self.formats.add("qdq")
        return self.tensors[self.deq[name]]

    def fconst(self, node, i: int, what: str):
        name = node.input[i]
        if name not in self.consts:
            raise ModelError(f"{self.where(node)}: {what} '{name}' is not a DequantizeLinear of "
                             f"a constant")
        return self.consts[name]

    def qdq_weights(self, node, i: int, rec: QOp, out_axis: int, what: str = "weight"):
        data, scale, zp, axis, _, src = self.fconst(node, i, what)
        rec.w_bits = self.const_bits.get(node.input[i], 8)
        if rec.w_bits > 8:
            raise ModelError(f"{self.where(node)}: {what} '{src}': not supported by this "
                             f"accelerator config: {rec.w_bits} bits")
        if scale.size > 1 and axis % data.ndim != out_axis:
            raise ModelError(f"{self.where(node)}: {what} '{src}' is quantized along axis {axis}, "
                             f"not per output channel (axis {out_axis})")
        rec.w, rec.w_scale = self.weight(node, data, scale, zp, out_axis, f"{what} '{src}'")
        rec.w_axis = out_axis

    def qdq_bias(self, node, i: int, rec: QOp):
        if len(node.input) > i and node.input[i] in self.init:  # a float bias
            rec.bias_float = np.asarray(self.init[node.input[i]], np.float64)
        elif len(node.input) > i and node.input[i]:
            data, scale, zp, _, _, src = self.fconst(node, i, "bias")
            if data.dtype in (np.int64, np.int16, np.int8) and np.abs(data).max(initial=0) < 2 ** 31:
                data = data.astype(np.int32)
            if data.dtype != np.int32 or (zp is not None and np.any(zp != 0)):
                raise ModelError(f"{self.where(node)}: bias '{src}' must be int32 with zero point 0")
            rec.bias, rec.bias_scale = data, np.atleast_1d(scale)

    def op_Conv(self, node):
        x = self.fin(node, 0)
        rec = QOp("conv", self.where(node), [x.name], attrs=_attrs(node))
        self.qdq_weights(node, 1, rec, 0)
        self.qdq_bias(node, 2, rec)
        self.pending[node.output[0]] = rec

    def op_Gemm(self, node):
        x = self.fin(node, 0)
        a = _attrs(node)
        rec = QOp("gemm", self.where(node), [x.name], attrs=a)
        self.qdq_weights(node, 1, rec, 0 if a.get("transB", 0) else 1)
        self.qdq_bias(node, 2, rec)
        self.pending[node.output[0]] = rec

    def op_MatMul(self, node):
        x = self.fin(node, 0)
        rec = QOp("gemm", self.where(node), [x.name])
        self.qdq_weights(node, 1, rec, 1)
        self.pending[node.output[0]] = rec

    def _float_vec(self, node, kind: str, n_in: int = 1):
        ins = [self.fin(node, i).name for i in range(n_in)]
        self.pending[node.output[0]] = QOp(kind, self.where(node), ins, attrs=_attrs(node))

    def _passthrough(self, node, kind: str):
        """A float MaxPool / Flatten / Reshape of a dequantized int8 tensor: its output is int8
        with the input's quantization, whether a quantizer follows (QDQ: the same parameters)
        or not (Brevitas' QONNX export)."""
        x = self.fin(node, 0)
        self.emit(QOp(kind, self.where(node), [x.name], node.output[0], x.q, attrs=_attrs(node)))
        self.deq[node.output[0]] = node.output[0]

    def requantized(self, node, x: str, y: str, q: tuple) -> bool:
        """Whether quantizer ``node`` (``x`` -> ``y`` with ``q``) re-quantizes an int8 tensor
        with its own parameters (a no-op: ``y`` is ``x``); a one-line error for others."""
        if not (x in self.tensors and self.deq.get(x) == x):
            return False
        if self.tensors[x].q != q:
            raise ModelError(f"{self.where(node)}: requantizes '{x}' from {self.tensors[x].q} to "
                             f"{q}; a requantization of a quantized tensor is not supported")
        self.tensors[y] = self.tensors[x]
        return True

    def is_int8(self, name: str) -> bool:
        """Whether ``name`` is an int8 tensor (not also a float dequantization, as QONNX's)."""
        return name in self.tensors and name not in self.deq

    def op_Add(self, node):
        self._float_vec(node, "add", 2)

    def op_MaxPool(self, node):
        if self.is_int8(node.input[0]):  # QOperator: MaxPool on int8
            self.emit(self._qvec(node, "maxpool", None))
        else:
            self._passthrough(node, "maxpool")

    def op_AveragePool(self, node):
        self._float_vec(node, "avgpool")

    def op_GlobalAveragePool(self, node):
        self._float_vec(node, "gap")

    def op_Flatten(self, node):
        if self.is_int8(node.input[0]):
            self.emit(self._qvec(node, "flatten", None))
        else:
            self._passthrough(node, "flatten")

    op_Reshape = op_Flatten

    def op_Relu(self, node):
        x = node.input[0]
        if x in self.pending and self.pending[x].act == "none":
            rec = self.pending.pop(x)
            rec.act = "relu"
            self.pending[node.output[0]] = rec
        else:
            self._float_vec(node, "relu")

    # QOperator

    def _qvec(self, node, kind: str, q_idx: tuple | None, n_in: int = 1, attrs=None):
        """A QOperator op on int8 inputs: ``q_idx`` = index of its output scale / zero
        point inputs (``None``: the output keeps the input's quantization)."""
        self.formats.add("qoperator")
        ins = [self.act(node, node.input[i]) for i in range(0, 3 * n_in, 3)] if q_idx else \
            [self.act(node, node.input[0])]
        if q_idx:
            for i, t in zip(range(0, 3 * n_in, 3), ins):
                if self.qparams(node, node.input[i + 1], node.input[i + 2], t.name) != t.q:
                    raise ModelError(f"{self.where(node)}: input '{t.name}' is given another "
                                     f"scale / zero point than it was computed with")
            out_q = self.qparams(node, node.input[q_idx[0]], node.input[q_idx[1]], node.output[0])
        else:
            out_q = ins[0].q
        rec = QOp(kind, self.where(node), [t.name for t in ins], node.output[0], out_q,
                  attrs=attrs if attrs is not None else _attrs(node))
        return rec

    def _qweights(self, node, rec: QOp, x: QTensor, wi: int, out_axis: int):
        if self.qparams(node, node.input[1], node.input[2], x.name) != x.q:
            raise ModelError(f"{self.where(node)}: input '{x.name}' is given another scale / zero "
                             f"point than it was computed with")
        w = self.const(node, node.input[wi], "weight")
        s = self.const(node, node.input[wi + 1], "weight scale")
        z = self.const(node, node.input[wi + 2], "weight zero point") if node.input[wi + 2] else None
        rec.w, rec.w_scale = self.weight(node, w, s, z, out_axis, f"weight '{node.input[wi]}'")
        rec.w_axis = out_axis

    def op_QLinearConv(self, node):
        self.formats.add("qoperator")
        x = self.act(node, node.input[0])
        rec = QOp("conv", self.where(node), [x.name], node.output[0],
                  self.qparams(node, node.input[6], node.input[7], node.output[0]), attrs=_attrs(node))
        self._qweights(node, rec, x, 3, 0)
        if len(node.input) > 8 and node.input[8]:
            rec.bias = np.asarray(self.const(node, node.input[8], "bias"))
        self.emit(rec)

    def op_QLinearMatMul(self, node):
        self.formats.add("qoperator")
        x = self.act(node, node.input[0])
        rec = QOp("gemm", self.where(node), [x.name], node.output[0],
                  self.qparams(node, node.input[6], node.input[7], node.output[0]))
        self._qweights(node, rec, x, 3, 1)
        self.emit(rec)

    def op_QGemm(self, node):
        self.formats.add("qoperator")
        x = self.act(node, node.input[0])
        a = _attrs(node)
        if len(node.input) < 9 or not node.input[7]:
            raise ModelError(f"{self.where(node)}: QGemm with a float output (no y_scale) is not "
                             f"supported")
        rec = QOp("gemm", self.where(node), [x.name], node.output[0],
                  self.qparams(node, node.input[7], node.input[8], node.output[0]), attrs=a)
        self._qweights(node, rec, x, 3, 0 if a.get("transB", 0) else 1)
        if node.input[6]:
            rec.bias = np.asarray(self.const(node, node.input[6], "bias"))
        self.emit(rec)

    def op_QLinearAdd(self, node):
        self.emit(self._qvec(node, "add", (6, 7), n_in=2))

    def op_QLinearAveragePool(self, node):
        self.emit(self._qvec(node, "avgpool", (3, 4)))

    def op_QLinearGlobalAveragePool(self, node):
        a = _attrs(node)
        if a.get("channels_last", 0):
            raise ModelError(f"{self.where(node)}: channels_last=1 is not supported (NCHW models)")
        self.emit(self._qvec(node, "gap", (3, 4)))

    # shapes

    def emit(self, rec: QOp) -> None:
        """Check ``rec``'s inputs, work out its output shape and record it."""
        ins = [self.tensors[n] for n in rec.inputs]
        x = ins[0]
        a = rec.attrs
        if rec.kind in ("maxpool", "flatten") and rec.out_q != x.q:
            raise ModelError(f"{rec.where}: input '{x.name}' and output '{rec.output}' have "
                             f"different scale / zero point ({x.q} vs {rec.out_q}); they must be "
                             f"equal")
        if rec.kind in ("conv", "maxpool", "avgpool"):
            if len(x.shape) != 3:
                raise ModelError(f"{rec.where}: expects a 4-D NCHW input, '{x.name}' has per-sample "
                                 f"shape {list(x.shape)}")
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                raise ModelError(f"{rec.where}: auto_pad {a['auto_pad']!r} is not supported; "
                                 f"give explicit pads")
            if rec.kind == "conv":
                kh, kw = rec.w.shape[2:]
            else:
                kh, kw = a["kernel_shape"]
            pads = tuple(a.get("pads", (0, 0, 0, 0)))
            stride = tuple(a.get("strides", (1, 1)))
            dil = tuple(a.get("dilations", (1, 1)))
            if rec.kind != "conv" and dil != (1, 1):
                raise ModelError(f"{rec.where}: dilated pooling is not supported")
            ceil = bool(a.get("ceil_mode", 0))
            try:
                ho, wo = (golden.conv_output_size(n, k, s, p0, p1, d, ceil) for n, k, s, p0, p1, d in
                          zip(x.shape[1:], (kh, kw), stride, pads[:2], pads[2:], dil))
            except ValueError as e:
                raise ModelError(f"{rec.where}: {e}") from None
            cout = rec.w.shape[0] if rec.kind == "conv" else x.shape[0]
            rec.attrs = dict(stride=stride, pads=pads, dilation=dil, groups=int(a.get("group", 1)),
                             kernel=(kh, kw), ceil_mode=ceil,
                             count_include_pad=int(a.get("count_include_pad", 0)))
            shape = (cout, ho, wo)
        elif rec.kind == "gemm":
            k = int(np.prod(x.shape))
            if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                raise ModelError(f"{rec.where}: Gemm needs transA=0, alpha=1, beta=1")
            kw_ = rec.w.shape[1 - rec.w_axis]
            if len(x.shape) != 1 or kw_ != k:
                raise ModelError(f"{rec.where}: input '{x.name}' {list(x.shape)} is not one vector "
                                 f"of {kw_} features per sample")
            shape = (int(rec.w.shape[rec.w_axis]),)
        elif rec.kind == "add":
            if ins[0].shape != ins[1].shape or ins[0].chw != ins[1].chw:
                raise ModelError(f"{rec.where}: broadcasting Add ({list(ins[0].shape)} + "
                                 f"{list(ins[1].shape)}) is not supported; the inputs must have one "
                                 f"shape")
            shape = x.shape
        elif rec.kind == "gap":
            if len(x.shape) != 3:
                raise ModelError(f"{rec.where}: expects a 4-D NCHW input")
            shape = (x.shape[0], 1, 1)
        elif rec.kind == "flatten":
            if a.get("axis", 1) != 1 and "axis" in a:
                raise ModelError(f"{rec.where}: only Flatten with axis=1 is supported")
            if rec.where.endswith("(Reshape)"):
                want = np.atleast_1d(self.init.get(self._reshape_shape(rec), np.zeros(0)))
                if want.size != 2 or int(np.prod(x.shape)) != (want[1] if want[1] > 0 else
                                                               int(np.prod(x.shape))):
                    raise ModelError(f"{rec.where}: only a Reshape to [batch, -1] is supported")
            flat = (int(np.prod(x.shape)),)
            chw = x.shape if len(x.shape) == 3 and x.shape[1] * x.shape[2] > 1 else x.chw
            self.alias(rec, flat, chw)
            return
        else:  # relu on an int8 tensor: a one-tap requantization with the clamp
            shape = x.shape
        if rec.kind != "gemm" and any(t.chw for t in ins):
            raise ModelError(f"{rec.where}: input '{x.name}' is a flattened NCHW map; only Gemm / "
                             f"MatMul may read it")
        self.add_tensor(rec.output, shape, rec.out_q)
        self.ops.append(rec)

    def _reshape_shape(self, rec: QOp) -> str:
        node = next(n for n in self.graph.node if self.where(n) == rec.where)
        return node.input[1] if len(node.input) > 1 else ""

    def alias(self, rec: QOp, shape: tuple, chw) -> None:
        """A Flatten / Reshape moves no data: its output is its input, reshaped."""
        x = self.tensors[rec.inputs[0]]
        self.tensors[rec.output] = QTensor(rec.output, shape, x.scale, x.zp, chw)
        self.ops.append(rec)


def build_qmodel(name: str, ops: list[QOp], tensors: dict[str, QTensor], input_q: QTensor,
                 output: str, rounding: dict | None = None) -> QModel:
    """The :class:`QModel` of quantized ops ``ops`` (shared by the ONNX and QONNX importers).

    ``rounding``: layer name -> ``"double"`` / ``"single"`` (default ``"double"``).
    """
    layers: list[QLayer] = []
    bits: dict[str, tuple] = {}
    alias = {input_q.name: QModel.INPUT}
    names: set[str] = set()
    rounding = rounding or {}
    for rec in ops:
        ins = [tensors[n] for n in rec.inputs]
        x = ins[0]
        if rec.kind == "flatten":
            alias[rec.output] = alias[x.name]
            continue
        for what, nbits in (("weights", rec.w_bits), (f"input '{x.name}'", x.bits),
                            (f"output '{rec.output}'", tensors[rec.output].bits)):
            if nbits != 8:
                raise ModelError(f"{rec.where}: {what}: not supported by this accelerator config: "
                                 f"{nbits} bits (the arrays take 8-bit weights and activations)")
        y = tensors[rec.output]
        lname = _layer_name(rec.output)
        if lname in names or lname == QModel.INPUT:
            lname = f"{lname}#{len(layers)}"
        names.add(lname)
        try:
            layer = _layer(rec, ins, y, lname, rounding.get(lname, ORT_ROUNDING))
        except ValueError as e:
            raise ModelError(f"{rec.where}: {e}") from None
        layer.name = layer.output = lname
        layer.inputs = [alias[t.name] for t in ins]
        if y.clamp:
            layer.act_min, layer.act_max = max(layer.act_min, y.clamp[0]), min(layer.act_max, y.clamp[1])
        alias[y.name] = lname
        bits[lname] = (rec.w_bits if rec.w is not None else None, y.bits)
        layers.append(layer)
    if not layers:
        raise ModelError(f"{name}: the model has no op the accelerator runs")
    if alias.get(output) != layers[-1].output:
        raise ModelError(f"{name}: the model output '{output}' must be computed by the last op")
    return QModel(name=name, layers=layers, input_scale=input_q.scale, input_zp=input_q.zp,
                  input_shape=input_q.shape,
                  input_layout="NCHW" if len(input_q.shape) == 3 else "flat",
                  meta={"bits": bits})


def _layer_name(tensor: str) -> str:
    """A layer's name: its output tensor without the quantizer's suffixes."""
    for suffix in ("_QuantizeLinear_Output", "_quantized", "_quant"):
        if tensor.endswith(suffix) and len(tensor) > len(suffix):
            return tensor[:-len(suffix)]
    return tensor


def single_rounding_multiplier(real: float) -> tuple[int, int]:
    """``(M0, shift)`` for ``real`` whose fixed-point requantization rounds once.

    ``MultiplyByQuantizedMultiplier`` with a negative shift rounds twice (the high
    multiply, then the rounding right shift); onnxruntime rounds ``acc * real`` once.
    For ``real < 0.5`` this returns ``(round(real 2^31), 0)`` (no right shift: one
    rounding, ``M0`` below ``2^30``), as long as ``M0 >= 2^24`` keeps float32's
    precision; otherwise TFLite's ``QuantizeMultiplier`` (whose shift is then >= 0
    for ``real >= 0.5``, one rounding too).
    """
    m0 = int(round(real * (1 << 31)))
    if real < 0.5 and m0 >= 1 << 24:
        return m0, 0
    return golden.quantize_multiplier(real)


def _bias(rec: QOp, x: QTensor, n: int) -> np.ndarray:
    if rec.bias is None and rec.bias_float is not None:
        b = np.round(rec.bias_float.reshape(-1) / (np.float64(np.float32(x.scale)) * rec.w_scale))
        if b.size != n or np.abs(b).max() >= 2 ** 31:
            raise ModelError(f"{rec.where}: float bias of {b.size} values does not fit int32 [{n}] "
                             f"at scale input scale x weight scale")
        return b.astype(np.int32)
    if rec.bias is None:
        return np.zeros(n, np.int32)
    b = np.asarray(rec.bias)
    if b.dtype != np.int32 or b.size != n:
        raise ModelError(f"{rec.where}: bias must be int32 [{n}], not {b.dtype} {list(b.shape)}")
    if rec.bias_scale is not None:
        want = np.float32(x.scale) * rec.w_scale
        if not np.allclose(np.broadcast_to(rec.bias_scale, (n,)), want, rtol=1e-5, atol=0):
            raise ModelError(f"{rec.where}: bias scale is not input scale x weight scale; the "
                             f"accelerator adds the bias to the int32 accumulator as it is")
    return b.reshape(n).astype(np.int32)


def _layer(rec: QOp, ins: list[QTensor], y: QTensor, name: str, rounding: str) -> QLayer:
    x = ins[0]
    if rec.kind == "conv":
        w = rec.w.transpose(0, 2, 3, 1)    # OIHW -> OHWI
        groups = rec.attrs["groups"]
        if x.shape[0] != w.shape[3] * groups:
            raise ModelError(f"{rec.where}: filter has {w.shape[3]} x {groups} input channels, "
                             f"input '{x.name}' {x.shape[0]}")
        attrs = {k: rec.attrs[k] for k in ("stride", "pads", "dilation", "groups")}
        layer = conv_layer(name, w, _bias(rec, x, w.shape[0]), rec.w_scale, x.q, y.q, rec.act,
                           attrs, x.nhwc, y.nhwc)
        layer.rounding = rounding
        return layer
    if rec.kind == "gemm":
        w = rec.w.T if rec.w_axis == 0 else rec.w    # [K, N]
        if x.chw:  # rows in (C, H, W) order -> the hardware's (H, W, C)
            c, h, wd = x.chw
            w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
        return fc_layer(name, w, _bias(rec, x, w.shape[1]), rec.w_scale, x.q, y.q, rec.act,
                        rounding=rounding)
    if rec.kind == "add":
        p = golden.add_params(x.scale, ins[1].scale, y.scale)
        attrs = {"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
                 "b_shift": p["b_shift"], "b_zp": ins[1].zp, "left_shift": p["left_shift"]}
        shape = x.nhwc if len(x.shape) == 3 else (1, 1, int(np.prod(x.shape)))
        return vector_layer(name, "add", x.q, y.q, p["out_m0"], p["out_shift"], attrs, rec.act,
                            shape, shape)
    if rec.kind == "maxpool":
        a = rec.attrs
        attrs = {"kernel": a["kernel"], "stride": a["stride"], "pads": a["pads"],
                 "ceil_mode": a["ceil_mode"]}
        return vector_layer(name, "maxpool", x.q, y.q, 1 << 30, 1, attrs, rec.act, x.nhwc, y.nhwc)
    if rec.kind == "avgpool":
        a = rec.attrs
        if any(a["pads"]) and not a["count_include_pad"]:
            raise ModelError(f"{rec.where}: padded average pooling with count_include_pad=0 divides "
                             f"by a tap count that varies per window; the accelerator's needs "
                             f"count_include_pad=1 or no padding")
        if a["ceil_mode"]:
            raise ModelError(f"{rec.where}: ceil_mode=1 average pooling is not supported")
        m0, shift = single_rounding_multiplier(
            float(np.float32(x.scale)) / (float(np.float32(y.scale)) * a["kernel"][0] * a["kernel"][1]))
        attrs = {"kernel": a["kernel"], "stride": a["stride"], "pads": a["pads"]}
        return vector_layer(name, "avgpool", x.q, y.q, m0, shift, attrs, rec.act, x.nhwc, y.nhwc)
    if rec.kind == "gap":
        m0, shift = single_rounding_multiplier(
            float(np.float32(x.scale)) / (float(np.float32(y.scale)) * x.shape[1] * x.shape[2]))
        return vector_layer(name, "gap", x.q, y.q, m0, shift, {}, rec.act, x.nhwc, y.nhwc)
    # relu of an int8 tensor: a one-tap average pool requantizing S_in -> S_out, clamped
    m0, shift = single_rounding_multiplier(float(np.float32(x.scale)) / float(np.float32(y.scale)))
    shape = x.nhwc if len(x.shape) == 3 else (1, 1, int(np.prod(x.shape)))
    attrs = {"kernel": (1, 1), "stride": (1, 1), "pads": (0, 0, 0, 0)}
    return vector_layer(name, "avgpool", x.q, y.q, m0, shift, attrs, "relu", shape, shape)


#: Readers of ONNX dialects marked by an op type: op type -> reader class (a subclass of the
#: QDQ / QOperator reader). :mod:`celosia.sw.importer.qonnx_import` registers ``"Quant"``.
DIALECTS: dict[str, type] = {}


def load_onnx_quant(path, rounding: dict | None = None) -> QModel:
    """Read a QDQ, QOperator (or QONNX) ONNX model into a :class:`~celosia.sw.quant.QModel`
    (no calibration).

    ``rounding``: layer name -> requantization rounding of an fc / conv layer, overriding the
    default :data:`ORT_ROUNDING`. ``model.meta``: ``source`` ``"onnx-qdq"`` /
    ``"onnx-qoperator"`` / ``"qonnx"``, ``float_input`` / ``float_output``,
    ``output_qparams``, ``bits`` (layer -> ``(weight bits, activation bits)``) and
    ``input_division`` ``"float32"`` (onnxruntime's QuantizeLinear divides in float32; it
    rounds ties to even where the golden model rounds them away from zero).
    Raises :class:`~celosia.errors.ModelError` (one line naming the file, node and
    tensor) for anything the accelerator cannot run: see the module docstring.
    """
    import onnx
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - a corrupt protobuf
        raise ModelError(f"{path}: cannot parse the ONNX file ({type(e).__name__}: {e})") from None
    ops = {n.op_type for n in model.graph.node}
    reader = next((cls for op, cls in DIALECTS.items() if op in ops), _Reader)
    return reader(path, model).qmodel(rounding)
