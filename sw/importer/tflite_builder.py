"""A small writer of ``.tflite`` flatbuffers (no TensorFlow needed).

Celosia's tests and examples build their int8 TFLite models with it: the
single-op cases of ``tests/sw/test_tflite.py`` and the bundled digits models
(``examples/make_tflite.py``). It writes exactly what it is told (tensors with
their int8 / int32 data and quantization parameters, operators with their
builtin options) and checks nothing: LiteRT's interpreter is the judge of the
files it produces.

Example::

    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=-3)
    w = b.tensor("w", (2, 4), "int8", scale=[0.01, 0.02], zero_point=[0, 0],
                 data=np.ones((2, 4), np.int8))
    y = b.tensor("y", (1, 2), "int8", scale=0.05, zero_point=1)
    b.op("FULLY_CONNECTED", [x, w, -1], [y], FullyConnectedOptions={})
    data = b.finish([x], [y])
"""

from __future__ import annotations

import importlib

import numpy as np

__all__ = ["TFLiteBuilder", "TENSOR_TYPES", "export_tflite"]

#: numpy dtype name -> TFLite ``TensorType`` value.
TENSOR_TYPES = {"float32": 0, "int32": 2, "uint8": 3, "int64": 4, "int16": 7, "int8": 9}


def _schema(table: str):
    """The generated module of a schema table (its ``Start`` / ``Add*`` / ``End`` functions)."""
    return importlib.import_module(f"tflite.{table}")


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


class TFLiteBuilder:
    """Collects tensors and operators, then serializes them as one-subgraph TFLite model."""

    def __init__(self):
        self._tensors: list[dict] = []
        self._buffers: list[bytes] = [b""]  # buffer 0: the empty buffer, by convention
        self._ops: list[tuple] = []
        self._codes: list[int] = []

    def tensor(self, name: str, shape, dtype: str = "int8", scale=None, zero_point=None,
               data=None, quantized_dimension: int = 0) -> int:
        """Add a tensor; returns its index.

        ``scale`` / ``zero_point``: scalars (per-tensor) or sequences (per-channel
        along ``quantized_dimension``); ``None`` for an unquantized tensor. ``data``
        makes it a constant (stored as ``dtype``, little endian).
        """
        buf = 0
        if data is not None:
            self._buffers.append(np.ascontiguousarray(data, dtype=dtype).tobytes())
            buf = len(self._buffers) - 1
        self._tensors.append(dict(name=name, shape=[int(d) for d in shape], type=TENSOR_TYPES[dtype],
                                  buffer=buf, scale=scale, zero_point=zero_point,
                                  qdim=int(quantized_dimension)))
        return len(self._tensors) - 1

    def op(self, code: str, inputs, outputs, **options) -> None:
        """Add an operator (``BuiltinOperator`` name); ``-1`` in ``inputs`` = omitted optional input.

        At most one keyword: the builtin options table by its schema name, with its
        fields in snake case, e.g. ``Conv2DOptions={"stride_w": 2, "padding": 1}``.
        """
        from tflite.BuiltinOperator import BuiltinOperator
        value = getattr(BuiltinOperator, code)
        if value not in self._codes:
            self._codes.append(value)
        if len(options) > 1:
            raise ValueError("one builtin options table per operator")
        self._ops.append((self._codes.index(value), list(inputs), list(outputs),
                          next(iter(options.items()), None)))

    # -- serialization -------------------------------------------------------------

    @staticmethod
    def _ints(b, values, kind: str = "int32"):
        arr = np.asarray(values, dtype=kind)
        return b.CreateNumpyVector(arr)

    def _options(self, b, table: str, fields: dict) -> int:
        mod = _schema(table)
        mod.Start(b)
        for key, value in fields.items():
            getattr(mod, "Add" + _camel(key))(b, value)
        return mod.End(b)

    def _quantization(self, b, t: dict) -> int | None:
        Q = _schema("QuantizationParameters")
        if t["scale"] is None:
            return None
        scale = self._ints(b, np.atleast_1d(t["scale"]), "float32")
        zp = self._ints(b, np.atleast_1d(t["zero_point"] if t["zero_point"] is not None else 0),
                        "int64")
        Q.Start(b)
        Q.AddScale(b, scale)
        Q.AddZeroPoint(b, zp)
        Q.AddQuantizedDimension(b, t["qdim"])
        return Q.End(b)

    def _vector(self, b, start, offsets) -> int:
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def finish(self, inputs, outputs) -> bytes:
        """The serialized model with graph ``inputs`` / ``outputs`` (tensor indices)."""
        import flatbuffers
        from tflite.BuiltinOptions import BuiltinOptions
        Buffer, Model, Operator, OperatorCode, SubGraph, Tensor = (
            _schema(n) for n in ("Buffer", "Model", "Operator", "OperatorCode", "SubGraph", "Tensor"))

        b = flatbuffers.Builder(1024)
        buffers = []
        for data in self._buffers:
            vec = None
            if data:
                b.StartVector(1, len(data), 16)  # 16-byte aligned: int32 / int8 data read in place
                b.head -= len(data)
                b.Bytes[b.head:b.head + len(data)] = data
                vec = b.EndVector()
            Buffer.Start(b)
            if vec is not None:
                Buffer.AddData(b, vec)
            buffers.append(Buffer.End(b))
        tensors = []
        for t in self._tensors:
            name = b.CreateString(t["name"])
            shape = self._ints(b, t["shape"])
            quant = self._quantization(b, t)
            Tensor.Start(b)
            Tensor.AddShape(b, shape)
            Tensor.AddType(b, t["type"])
            Tensor.AddBuffer(b, t["buffer"])
            Tensor.AddName(b, name)
            if quant is not None:
                Tensor.AddQuantization(b, quant)
            tensors.append(Tensor.End(b))
        ops = []
        for code, ins, outs, options in self._ops:
            ins_v, outs_v = self._ints(b, ins), self._ints(b, outs)
            opt = self._options(b, options[0], options[1]) if options else None
            Operator.Start(b)
            Operator.AddOpcodeIndex(b, code)
            Operator.AddInputs(b, ins_v)
            Operator.AddOutputs(b, outs_v)
            if opt is not None:
                Operator.AddBuiltinOptionsType(b, getattr(BuiltinOptions, options[0]))
                Operator.AddBuiltinOptions(b, opt)
            ops.append(Operator.End(b))
        t_vec = self._vector(b, SubGraph.StartTensorsVector, tensors)
        o_vec = self._vector(b, SubGraph.StartOperatorsVector, ops)
        in_vec, out_vec = self._ints(b, inputs), self._ints(b, outputs)
        sg_name = b.CreateString("main")
        SubGraph.Start(b)
        SubGraph.AddTensors(b, t_vec)
        SubGraph.AddInputs(b, in_vec)
        SubGraph.AddOutputs(b, out_vec)
        SubGraph.AddOperators(b, o_vec)
        SubGraph.AddName(b, sg_name)
        subgraph = SubGraph.End(b)
        codes = []
        for value in self._codes:
            OperatorCode.Start(b)
            OperatorCode.AddDeprecatedBuiltinCode(b, min(value, 127))
            OperatorCode.AddBuiltinCode(b, value)
            OperatorCode.AddVersion(b, 1)
            codes.append(OperatorCode.End(b))
        codes_vec = self._vector(b, Model.StartOperatorCodesVector, codes)
        sg_vec = self._vector(b, Model.StartSubgraphsVector, [subgraph])
        buf_vec = self._vector(b, Model.StartBuffersVector, buffers)
        desc = b.CreateString("celosia TFLiteBuilder")
        Model.Start(b)
        Model.AddVersion(b, 3)
        Model.AddOperatorCodes(b, codes_vec)
        Model.AddSubgraphs(b, sg_vec)
        Model.AddDescription(b, desc)
        Model.AddBuffers(b, buf_vec)
        b.Finish(Model.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())



def _tflite_padding(layer, in_hw, out_hw) -> int:
    """TFLite padding enum (0 SAME, 1 VALID) giving the layer's pads, or ValueError."""
    pads = tuple(layer.attrs.get("pads", (0, 0, 0, 0)))
    if not any(pads):
        return 1
    k = layer.attrs["kernel"] if "kernel" in layer.attrs else layer.w.shape[1:3]
    stride = layer.attrs.get("stride", (1, 1))
    dil = layer.attrs.get("dilation", (1, 1))
    same = []
    for n, o, kk, s, d in zip(in_hw, out_hw, k, stride, dil):
        total = max((o - 1) * s + (kk - 1) * d + 1 - n, 0)
        same.append((total // 2, total - total // 2))
    if pads == (same[0][0], same[1][0], same[0][1], same[1][1]) and \
            tuple(out_hw) == tuple(-(-n // s) for n, s in zip(in_hw, stride)):
        return 0
    raise ValueError(f"layer {layer.name!r}: pads {pads} are neither VALID nor TFLite's SAME")


def _pad(b: TFLiteBuilder, src: int, layer, qp: tuple) -> int:
    """A PAD of the conv layer's input by its ``pads``; the padded tensor."""
    t, l, bt, r = layer.attrs["pads"]
    h, w, c = layer.in_shape
    out = b.tensor(f"{layer.name}/padded", (1, h + t + bt, w + l + r, c), scale=qp[0],
                   zero_point=qp[1])
    pads = b.tensor(f"{layer.name}/paddings", (4, 2), "int32", data=[[0, 0], [t, bt], [l, r], [0, 0]])
    b.op("PAD", [src, pads], [out])
    return out


def _reshape(b: TFLiteBuilder, src: int, name: str, shape: tuple, qp: tuple) -> int:
    """A RESHAPE of tensor ``src`` to ``(1, *shape)`` (a constant shape input); the new tensor."""
    out = b.tensor(name, (1, *shape), scale=qp[0], zero_point=qp[1])
    b.op("RESHAPE", [src, b.tensor(f"{name}/shape", (len(shape) + 1,), "int32", data=[1, *shape])],
         [out])
    return out


def export_tflite(model, fc_as_conv: bool = False) -> bytes:
    """An int8 ``.tflite`` model computing what ``model`` (a :class:`~celosia.sw.quant.QModel`) does.

    The input is float32 NHWC quantized by a ``QUANTIZE`` op with the model's input
    parameters, the output is dequantized (the converters' default interface); every
    layer keeps its int8 weights, int32 bias and scales, so TFLite derives the same
    ``M0`` / ``shift``. ``fc`` layers become ``FULLY_CONNECTED`` (what the TFLite
    converter emits), or with ``fc_as_conv`` a ``CONV_2D`` whose window covers the whole
    input (LiteRT's FULLY_CONNECTED rounds its requantization once, its CONV_2D twice as
    the accelerator does; see ``docs/numerics.md``). Supports ``fc``, ``conv`` (VALID /
    SAME padding, other padding as a PAD op), ``maxpool``, ``add`` and ``gap`` (as MEAN,
    whose multiplier TFLite forms differently: the file's MEAN is what LiteRT and the
    importer compute, not the PTQ layer's own ``M0``); raises ``ValueError`` otherwise.
    """
    from tflite.ActivationFunctionType import ActivationFunctionType as A
    acts = {"none": A.NONE, "relu": A.RELU, "relu6": A.RELU6, "relu_n1_to_1": A.RELU_N1_TO_1}
    b = TFLiteBuilder()
    shapes = {model.INPUT: tuple(model.input_shape or (model.in_features,))}
    if model.input_layout == "NCHW" and len(shapes[model.INPUT]) == 3:
        c, h, w = shapes[model.INPUT]
        shapes[model.INPUT] = (h, w, c)
    x_f = b.tensor("input", (1, *shapes[model.INPUT]), "float32")
    ids = {model.INPUT: b.tensor("input_int8", (1, *shapes[model.INPUT]), scale=model.input_scale,
                                 zero_point=model.input_zp)}
    b.op("QUANTIZE", [x_f], [ids[model.INPUT]])
    qps = {model.INPUT: (model.input_scale, model.input_zp)}
    for i, layer in enumerate(model.layers):
        srcs = model.layer_inputs(i)
        src = ids[srcs[0]]
        act = acts[layer.activation if layer.activation in acts else "none"]
        if layer.op == "fc" and len(shapes[srcs[0]]) != 1 and not fc_as_conv:
            src = _reshape(b, src, f"{layer.name}/flatten", (layer.in_features,), qps[srcs[0]])
        out_shape = tuple(layer.out_shape)
        if layer.op == "fc" and fc_as_conv:
            in_shape = shapes[srcs[0]]
            if len(in_shape) != 3:
                in_shape = (1, 1, layer.in_features)
                src = _reshape(b, src, f"{layer.name}/to_nhwc", in_shape, qps[srcs[0]])
            out_shape = (1, 1, layer.out_features)
        y = b.tensor(layer.output, (1, *out_shape), scale=layer.out_scale, zero_point=layer.out_zp)
        if layer.is_gemm:
            n = len(layer.bias)
            ws = np.asarray(layer.w_scale, np.float32)
            bias = b.tensor(f"{layer.name}/bias", (n,), "int32", scale=ws * np.float32(layer.in_scale),
                            zero_point=[0] * n, data=layer.bias)
        if layer.op == "fc" and not fc_as_conv:
            w = b.tensor(f"{layer.name}/weights", (n, layer.in_features), scale=ws, zero_point=[0] * n,
                         data=layer.w.T)
            b.op("FULLY_CONNECTED", [src, w, bias], [y],
                 FullyConnectedOptions={"fused_activation_function": act})
        elif layer.is_gemm:
            if layer.op == "fc":
                w_data = layer.w.T.reshape(n, *in_shape)
                pad, attrs = 1, {"stride": (1, 1), "dilation": (1, 1), "groups": 1}
            else:
                w_data = layer.w
                attrs = layer.attrs
                try:
                    pad = _tflite_padding(layer, layer.in_shape[:2], layer.out_shape[:2])
                except ValueError:  # explicit padding: a PAD op (of the zero point), then VALID
                    src, pad = _pad(b, src, layer, qps[srcs[0]]), 1
            if attrs.get("groups", 1) != 1:
                raise ValueError(f"layer {layer.name!r}: grouped convolutions are not exported")
            w = b.tensor(f"{layer.name}/weights", w_data.shape, scale=ws, zero_point=[0] * n,
                         data=w_data)
            (sh, sw), (dh, dw) = attrs["stride"], attrs.get("dilation", (1, 1))
            b.op("CONV_2D", [src, w, bias], [y], Conv2DOptions=dict(
                padding=pad, stride_h=sh, stride_w=sw, dilation_h_factor=dh, dilation_w_factor=dw,
                fused_activation_function=act))
        elif layer.op == "maxpool":
            (kh, kw), (sh, sw) = layer.attrs["kernel"], layer.attrs["stride"]
            b.op("MAX_POOL_2D", [src], [y], Pool2DOptions=dict(
                padding=_tflite_padding(layer, layer.in_shape[:2], layer.out_shape[:2]),
                stride_h=sh, stride_w=sw, filter_height=kh, filter_width=kw,
                fused_activation_function=act))
        elif layer.op == "gap":
            axes = b.tensor(f"{layer.name}/axes", (2,), "int32", data=[1, 2])
            b.op("MEAN", [src, axes], [y], ReducerOptions={"keep_dims": True})
        elif layer.op == "add":
            b.op("ADD", [src, ids[srcs[1]]], [y], AddOptions={"fused_activation_function": act})
        else:
            raise ValueError(f"layer {layer.name!r}: op {layer.op!r} is not exported to TFLite")
        ids[layer.output], shapes[layer.output] = y, out_shape
        qps[layer.output] = (layer.out_scale, layer.out_zp)
    last = model.layers[-1]
    out = ids[last.output]
    if len(shapes[last.output]) != 1 and last.op == "fc":
        out = _reshape(b, out, "logits_int8", (last.out_features,), (last.out_scale, last.out_zp))
    y_f = b.tensor("output", (1, *((last.out_features,) if last.op == "fc"
                                    else tuple(last.out_shape))), "float32")
    b.op("DEQUANTIZE", [out], [y_f])
    return b.finish([x_f], [y_f])
