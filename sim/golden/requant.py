"""Integer requantization exactly as TFLite's reference int8 kernels do it.

``MultiplyByQuantizedMultiplier(x, M0, shift)`` from
``tensorflow/lite/kernels/internal/common.h`` (the default, double-rounding
variant): a saturating rounding doubling high multiply by the Q31 multiplier
``M0`` followed by a rounding (half away from zero) right shift. Everything is
element-wise NumPy on int64 holding int32 values; nothing here is clever.
"""

from __future__ import annotations

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap_int32(x) -> np.ndarray:
    """Two's complement wrap of integers to int32 (as C's int32 arithmetic on the hardware)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul for int32 a, b (as int64 arrays).

    ``round(a * b / 2^31)``; the nudge ``1 - 2^30`` for negative products followed by
    C's truncating division makes ties round toward +infinity (-0.5 -> 0, -1.5 -> -1),
    not away from zero. Only ``INT32_MIN * INT32_MIN`` overflows; it saturates.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b  # |ab| <= 2^62: fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    # C integer division truncates toward zero.
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where(overflow, INT32_MAX, q)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, m0, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int32 x, int32 M0, int shift).

    ``shift`` > 0 is a left shift applied to ``x`` first (wrapping in int32 as the
    C code does); ``shift`` < 0 a rounding right shift applied last.
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.minimum(np.maximum(shift, 0), 63)   # >= 32 leaves 0 after the int32 wrap
    # any right exponent >= 33 rounds an int32 to 0; NumPy's int64 shifts are only
    # defined below 64, so larger ones (an int8 shift reaches 128) are clamped first
    right = np.minimum(np.maximum(-shift, 0), 33)
    scaled = wrap_int32(x << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, m0), right)


#: Right shifts of :func:`multiply_by_quantized_multiplier_single`: ``31 - shift`` clamped to
#: this range (TFLite requires ``-31 <= shift <= 30``, where the clamp changes nothing).
SINGLE_SHIFT_RANGE = (1, 62)


def multiply_by_quantized_multiplier_single(x, m0, shift) -> np.ndarray:
    """TFLite's single-rounding MultiplyByQuantizedMultiplier (``TFLITE_SINGLE_ROUNDING``;
    what LiteRT's int8 FULLY_CONNECTED uses):
    ``(x * M0 + 2^(t-1)) >> t`` with ``t = 31 - shift`` (clamped to
    :data:`SINGLE_SHIFT_RANGE`), an arithmetic (flooring) shift, so ties round toward
    +infinity; the result wrapped to int32 (C's cast; TFLite only DCHECKs that it fits).
    The 64-bit product cannot overflow: ``|x * M0| <= 2^62``.
    """
    x = np.asarray(x, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    t = np.clip(31 - np.asarray(shift, dtype=np.int64), *SINGLE_SHIFT_RANGE)
    return wrap_int32((x * m0 + (np.int64(1) << (t - 1))) >> t)


def requantize(acc, bias, m0, shift, out_zp, act_min=-128, act_max=127,
               single_round: bool = False) -> np.ndarray:
    """int32 accumulator (+ int32 bias) -> int8, per output channel (last axis).

    ``clamp(MBQM(acc + bias, M0, shift) + out_zp, act_min, act_max)``; the bias add
    wraps in int32 like the accumulator does. ``single_round``: TFLite's single-rounding
    MBQM (:func:`multiply_by_quantized_multiplier_single`) instead of the default
    double rounding (a layer's ``rounding = "single"``; STORE ``single_round``).
    """
    total = wrap_int32(np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64))
    mbqm = multiply_by_quantized_multiplier_single if single_round else multiply_by_quantized_multiplier
    out = mbqm(total, m0, shift) + int(out_zp)
    return np.clip(out, act_min, act_max).astype(np.int8)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real -> (M0 in [2^30, 2^31) Q31, shift) with real ~ M0 * 2^(shift-31).

    Returns ``(0, 0)`` for 0. Raises for negative multipliers (never produced by
    symmetric weights and positive scales).
    """
    if not np.isfinite(real_multiplier):
        raise ValueError(f"requantization multiplier must be finite, not {real_multiplier}")
    if real_multiplier < 0:
        raise ValueError(f"requantization multiplier must be >= 0, not {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = np.frexp(real_multiplier)  # real = q * 2^shift, q in [0.5, 1)
    q_fixed = int(np.floor(float(q) * (1 << 31) + 0.5))  # std::round: half away from zero
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:  # underflow: TFLite flushes to zero
        return 0, 0
    if shift > 30:
        raise ValueError(f"requantization multiplier {real_multiplier} is too large (shift {shift} > 30)")
    return q_fixed, int(shift)
