"""Golden model: the exact integer result of every operator (plain NumPy)."""

from .ops import (
    ACTIVATIONS,
    activation_range,
    dequantize,
    fully_connected,
    fully_connected_float,
    quantize,
    relu_int8,
    round_half_away_from_zero,
)
from .requant import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

__all__ = [
    "ACTIVATIONS",
    "INT32_MAX",
    "INT32_MIN",
    "activation_range",
    "dequantize",
    "fully_connected",
    "fully_connected_float",
    "multiply_by_quantized_multiplier",
    "quantize",
    "quantize_multiplier",
    "relu_int8",
    "requantize",
    "round_half_away_from_zero",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    "wrap_int32",
]
