"""TFLite / gemmlowp reference arithmetic transcribed with Python ints, independent of
``celosia.sim.golden``: the rounding primitives the golden-model tests compare against
(tests/sim/test_golden.py, tests/sim/test_golden_cnn.py)."""

import math

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def c_int32(v: int) -> int:
    """Two's complement wrap, as int32 arithmetic on the hardware."""
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def c_div(a: int, b: int) -> int:
    """C integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    overflow = a == b and a == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = c_div(ab_64 + nudge, 1 << 31)
    return INT32_MAX if overflow else ab_x2_high32


def ref_rdbp(x: int, exponent: int) -> int:
    assert 0 <= exponent <= 31
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def ref_mbqm(x: int, quantized_multiplier: int, shift: int) -> int:
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    return ref_rdbp(ref_srdhm(c_int32(x * (1 << left_shift)), quantized_multiplier), right_shift)


def ref_quantize_multiplier(real: float):
    """TFLite QuantizeMultiplier with math.frexp and Python rounding of the exact double."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    v = q * (1 << 31)  # exact: q has 53 bits
    q_fixed = math.floor(v) + (1 if v - math.floor(v) >= 0.5 else 0)
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift
