"""Model importers: files in foreign formats -> :class:`celosia.sw.graph.Graph` (float ONNX,
quantized by :func:`celosia.sw.quant.quantize_graph`) or straight to a
:class:`celosia.sw.quant.QModel` (int8 ``.tflite``, quantization taken from the file)."""

from .onnx_import import SUPPORTED_OPS, load_onnx
from .tflite_import import load_tflite

__all__ = ["load_onnx", "load_tflite", "SUPPORTED_OPS"]
