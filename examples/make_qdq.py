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
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from celosia.sw.data import DATA_DIR, MODELS, digits_split

__all__ = ["FILES", "build", "main"]

#: file name -> (float model, onnxruntime QuantFormat name).
FILES = {f"{model}_{tag}.onnx": (model, fmt)
         for model in ("digits_mlp", "digits_cnn", "digits_resnet")
         for tag, fmt in (("qdq", "QDQ"), ("qop", "QOperator"))}


def build(name: str) -> bytes:
    """The bytes of bundled file ``name`` (a key of :data:`FILES`), computed afresh."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    model, fmt = FILES[name]
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
