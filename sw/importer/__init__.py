"""Model importers: files in foreign formats -> :class:`celosia.sw.graph.Graph` (float ONNX,
quantized by :func:`celosia.sw.quant.quantize_graph`) or straight to a
:class:`celosia.sw.quant.QModel` (int8 ``.tflite``, ONNX QDQ / QOperator and QONNX:
quantization taken from the file)."""

from .onnx_import import SUPPORTED_OPS, load_onnx
from . import qonnx_import  # noqa: F401 - registers the QONNX dialect with load_onnx_quant
from .onnx_quant_import import load_onnx_quant
from .tflite_import import load_tflite

__all__ = ["load_onnx", "load_tflite", "load_onnx_quant", "SUPPORTED_OPS"]
