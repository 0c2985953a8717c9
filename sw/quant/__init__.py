"""Quantization: post-training quantization helpers for the int8 TFLite scheme."""

from .model import QLayer, QModel
from .ptq import (
    QParams,
    calibrate_ranges,
    choose_activation_qparams,
    quantize_bias,
    quantize_weights_per_channel,
    requant_params,
)

__all__ = [
    "QLayer",
    "QModel",
    "quantize_graph",
    "CalibrationWarning",
    "MIN_CALIB_SAMPLES",
    "QParams",
    "calibrate_ranges",
    "choose_activation_qparams",
    "quantize_bias",
    "quantize_weights_per_channel",
    "requant_params",
]

from .graph_ptq import MIN_CALIB_SAMPLES, CalibrationWarning, quantize_graph  # noqa: E402  (needs .model and .ptq)
