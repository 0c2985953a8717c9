"""Write the bundled digits models as int8 ``.tflite`` files (no TensorFlow needed).

``python -m celosia.examples.make_tflite`` takes the float digits MLP, CNN and
residual CNN (``digits_*.onnx`` in :mod:`celosia.sw.data`), quantizes
them with TFLite's scheme (Celosia's PTQ: symmetric per-channel int8 weights,
int32 bias at scale ``S_in * S_w``, asymmetric int8 activations calibrated on the
training split) and writes them with
:func:`~celosia.sw.importer.tflite_builder.export_tflite`:

* ``digits_mlp_int8.tflite``, ``digits_cnn_int8.tflite``, ``digits_resnet_int8.tflite``:
  the layout the TFLite converter produces (float input -> QUANTIZE, FULLY_CONNECTED
  classifier, DEQUANTIZE -> float output; the residual CNN's stride-2 convolution
  pads (1, 1, 1, 1), neither VALID nor SAME, so a PAD op precedes it, and its global
  average pooling is a MEAN);
* ``digits_cnn_int8_conv.tflite``, ``digits_resnet_int8_conv.tflite``: the same CNNs
  with the classifier written as a CONV_2D whose window covers its input. LiteRT requantizes
  FULLY_CONNECTED with a single rounding and CONV_2D with the double rounding
  Celosia's PPU implements (``docs/numerics.md``), so this file runs bit-exact
  against LiteRT end to end; ``celosia demo --model digits_cnn_tflite`` shows it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from celosia.sw.data import DATA_DIR, MODELS, digits_split

__all__ = ["FILES", "build", "main", "write_files"]

#: file name -> (float model, classifier as CONV_2D).
FILES = {"digits_mlp_int8.tflite": ("digits_mlp", False),
         "digits_cnn_int8.tflite": ("digits_cnn", False),
         "digits_cnn_int8_conv.tflite": ("digits_cnn", True),
         "digits_resnet_int8.tflite": ("digits_resnet", False),
         "digits_resnet_int8_conv.tflite": ("digits_resnet", True)}


def build(name: str) -> bytes:
    """The bytes of bundled file ``name`` (a key of :data:`FILES`), computed afresh."""
    from celosia.sw.importer import load_onnx
    from celosia.sw.importer.tflite_builder import export_tflite
    from celosia.sw.quant import quantize_graph

    model, fc_as_conv = FILES[name]
    graph = load_onnx(MODELS[model])
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x_train = digits_split()[0].reshape(-1, *shape)
    return export_tflite(quantize_graph(graph, x_train), fc_as_conv=fc_as_conv)


def write_files(names, build_file, out_dir: Path) -> int:
    """Write ``build_file(name)`` to ``out_dir / name`` for each of ``names`` (shared with
    :mod:`celosia.examples.make_qdq`)."""
    for name in names:
        data = build_file(name)
        (Path(out_dir) / name).write_bytes(data)
        print(f"wrote {Path(out_dir) / name} ({len(data)} bytes)")
    return 0


def main(out_dir: Path = DATA_DIR) -> int:
    return write_files(FILES, build, out_dir)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
