"""Model importers: files in foreign formats -> :class:`celosia.sw.graph.Graph`."""

from .onnx_import import SUPPORTED_OPS, load_onnx

__all__ = ["load_onnx", "SUPPORTED_OPS"]
