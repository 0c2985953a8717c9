"""Write the bundled digits models as int8 ONNX QDQ and QOperator models (onnxruntime's quantizer).

``python -m celosia.examples.make_qdq`` takes the float digits MLP, CNN and
residual CNN (``digits_*.onnx`` in :mod:`celosia.sw.data`) and quantizes each
with ``onnxruntime.quantization.quantize_static``, calibrated (MinMax) on the
training split of the digits data, twice:

* ``digits_*_qdq.onnx``: ``QuantFormat.QDQ``, QuantizeLinear / DequantizeLinear
  pairs around the float Conv / Gemm / Add / pooling nodes;
* ``digits_*_qop.onnx``: ``QuantFormat.QOperator``, QLinearConv, QLinearMatMul,
  QLinearAdd, QLinearGlobalAveragePool, ... with QuantizeLinear / DequantizeLinear at
  the edges.

Both with int8 activations (asymmetric, per tensor) and symmetric int8 weights per
output channel, the scheme the accelerator runs (``docs/numerics.md``, "ONNX
quantized models"). :func:`celosia.sw.importer.load_onnx_quant` reads them.

``digits_cnn_qonnx.onnx`` is the QDQ CNN rewritten as QONNX without torch or Brevitas
(:func:`qdq_to_qonnx`): every QuantizeLinear / DequantizeLinear pair becomes one
``Quant`` node (``qonnx.custom_op.general``; unsigned where the zero point is -128, as
Brevitas' ``QuantReLU``), every quantized weight a float initializer with a ``Quant``
node, every bias a float initializer, as Brevitas exports them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from celosia.sw.data import DATA_DIR, MODELS, digits_split

__all__ = ["FILES", "build", "main", "qdq_to_qonnx"]

#: file name -> (float model, onnxruntime QuantFormat name, or "QONNX").
FILES = {f"{model}_{tag}.onnx": (model, fmt)
         for model in ("digits_mlp", "digits_cnn", "digits_resnet")
         for tag, fmt in (("qdq", "QDQ"), ("qop", "QOperator"))}
FILES["digits_cnn_qonnx.onnx"] = ("digits_cnn", "QONNX")


def qdq_to_qonnx(model, weight_bits: int = 8):
    """The QDQ ONNX ``model`` rewritten with QONNX ``Quant`` nodes (a new ``ModelProto``).

    ``weight_bits`` below 8 requantizes the weights to that width (scale x 2^(8 - bits),
    integers rounded and clamped), to make a sub-8-bit model.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes, extra = [], []
    rename = {}

    def const(name, value):
        extra.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def quant(x, y, scale, zp, bits, signed, name):
        return helper.make_node("Quant", [x, scale, zp, bits], [y], name=name,
                                domain="qonnx.custom_op.general", signed=int(signed), narrow=0,
                                rounding_mode="ROUND")

    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in init:
            q = init[n.input[0]].astype(np.float64)
            s = init[n.input[1]].astype(np.float64)
            axis = dict((a.name, a.i) for a in n.attribute).get("axis", 1)
            shape = [1] * q.ndim
            if s.size > 1:
                shape[axis] = s.size
            s = s.reshape(shape)
            w = q * s
            if q.dtype == np.int32 or init[n.input[0]].dtype == np.int32:  # a bias: plain float
                extra.append(numpy_helper.from_array(w.astype(np.float32), n.output[0]))
                continue
            bits = weight_bits
            if bits < 8:
                s = s * 2 ** (8 - bits)
                w = np.clip(np.round(w / s), -(1 << (bits - 1)), (1 << (bits - 1)) - 1) * s
            src = const(n.input[0] + "_float", w)
            nodes.append(quant(src, n.output[0], const(n.output[0] + "_scale", s),
                               const(n.output[0] + "_zeropt", 0), const(n.output[0] + "_bits", bits),
                               True, n.name or n.output[0]))
        elif n.op_type == "QuantizeLinear":
            z = int(init[n.input[2]])
            signed = z != -128
            scale = n.input[1]
            nodes.append(quant(n.input[0], n.output[0], scale,
                               const(n.output[0] + "_zeropt", z if signed else 0),
                               const(n.output[0] + "_bits", 8), signed, n.name or n.output[0]))
        elif n.op_type == "DequantizeLinear":  # of an activation: the Quant's output already
            rename[n.output[0]] = n.input[0]
        else:
            nodes.append(n)
    for n in nodes:
        for k, i in enumerate(n.input):
            n.input[k] = rename.get(i, i)
    keep = [t for t in g.initializer if t.name in {i for n in nodes for i in n.input}]
    outputs = []
    for o in g.output:
        o2 = onnx.ValueInfoProto()
        o2.CopyFrom(o)
        o2.name = rename.get(o.name, o.name)
        outputs.append(o2)
    graph = helper.make_graph(nodes, g.name, list(g.input), outputs, keep + extra)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid("qonnx.custom_op.general", 1)])


def build(name: str) -> bytes:
    """The bytes of bundled file ``name`` (a key of :data:`FILES`), computed afresh."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    model, fmt = FILES[name]
    if fmt == "QONNX":
        return qdq_to_qonnx(onnx.load_from_string(build(f"{model}_qdq.onnx"))).SerializeToString()
    src = MODELS[model]
    inp = onnx.load(src).graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    x_train = digits_split()[0].reshape(-1, *shape)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{inp.name: x_train[i:i + 64]} for i in range(0, len(x_train), 64)])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        quantize_static(str(src), str(out), Reader(), quant_format=getattr(QuantFormat, fmt),
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        return out.read_bytes()


def main(out_dir: Path = DATA_DIR) -> int:
    from celosia.examples.make_tflite import write_files
    return write_files(FILES, build, out_dir)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
