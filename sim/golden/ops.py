"""Golden int8 operators: the exact integer result of each operator Celosia runs.

Everything follows TFLite's reference kernels (``tensorflow/lite/kernels/internal/
reference/``) and the scheme of Jacob et al. 2018, ``r = S (q - Z)``:

* activations int8 asymmetric (scale ``S``, zero point ``Z``);
* weights int8 symmetric per output channel (``Z = 0``);
* bias int32 with scale ``S_in * S_w``;
* int32 accumulation, then :func:`~celosia.sim.golden.requant.requantize`.

Scales are float32 numbers, as a ``.tflite`` file stores them; they are widened
to float64 where TFLite computes in double. The code is plain NumPy on int64 /
float64 on purpose: it is the reference, not the fast path.
"""

from __future__ import annotations

import numpy as np

from .requant import INT32_MAX, requantize

__all__ = [
    "round_half_away_from_zero",
    "quantize",
    "dequantize",
    "relu_int8",
    "activation_range",
    "fully_connected",
    "fully_connected_float",
    "ACTIVATIONS",
]

#: Fused activations understood by :func:`activation_range` / :func:`fully_connected_float`.
ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1")


def round_half_away_from_zero(x) -> np.ndarray:
    """C's ``std::round`` (TFLite's ``TfLiteRound``): nearest integer, ties away from zero.

    Not ``np.round`` (ties to even) and not ``floor(x + 0.5)`` (wrong for negative
    ties and for 0.49999999999999994). ``x - trunc(x)`` is exact in floating point.
    """
    x = np.asarray(x)
    t = np.trunc(x)
    with np.errstate(invalid="ignore"):  # inf - inf: frac is NaN and inf stays inf
        frac = x - t
    return t + np.where(np.abs(frac) >= 0.5, np.sign(x), 0).astype(x.dtype)


def _check_scale(name: str, scale) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be finite and > 0, not {scale!r}")
    return s


def _check_int_range(name: str, value, lo: int, hi: int) -> np.ndarray:
    v = np.asarray(value)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if np.any(v < lo) or np.any(v > hi):
        raise ValueError(f"{name} must be in {lo}..{hi}, not {value!r}")
    return v.astype(np.int64)


def _check_dtype(name: str, a, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, not {a.dtype.name}")
    return a


def quantize(x_float, scale, zero_point, qmin: int = -128, qmax: int = 127) -> np.ndarray:
    """Float -> int8, as TFLite's reference ``AffineQuantize``.

    ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` where ``x`` is float32,
    the division is done in double (TFLite holds the scale as ``double``) and
    ``round`` is ``std::round``: **ties away from zero** (2.5 -> 3, -2.5 -> -3).
    ONNX ``QuantizeLinear`` rounds ties to even instead, so the two differ only on
    exact ties.

    ``scale`` and ``zero_point`` are scalars or arrays broadcasting against
    ``x_float`` (per-channel: shape them along the channel axis). Infinities
    saturate; NaN is rejected.

    Returns int8 (int16 if ``qmin``/``qmax`` exceed the int8 range).
    """
    if not (isinstance(qmin, (int, np.integer)) and isinstance(qmax, (int, np.integer)) and qmin < qmax):
        raise ValueError(f"qmin < qmax must be integers, not qmin={qmin!r}, qmax={qmax!r}")
    x = np.asarray(x_float, dtype=np.float32)
    if np.any(np.isnan(x)):
        raise ValueError("quantize input contains NaN")
    s = _check_scale("scale", scale).astype(np.float64)
    zp = _check_int_range("zero_point", zero_point, qmin, qmax)
    with np.errstate(over="ignore"):
        q = round_half_away_from_zero(x.astype(np.float64) / s) + zp
    out_dtype = np.int8 if (qmin >= -128 and qmax <= 127) else np.int16
    return np.clip(q, qmin, qmax).astype(out_dtype)


def dequantize(q, scale, zero_point) -> np.ndarray:
    """int -> float32, as TFLite's reference ``Dequantize``: ``float(scale * (q - zero_point))``.

    The product is formed in double and rounded once to float32.
    """
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"dequantize input must be an integer array, not {q.dtype.name}")
    s = _check_scale("scale", scale).astype(np.float64)
    zp = np.asarray(zero_point)
    if not np.issubdtype(zp.dtype, np.integer):
        raise ValueError(f"zero_point must be an integer, not {zero_point!r}")
    return (s * (q.astype(np.int64) - zp.astype(np.int64))).astype(np.float32)


def relu_int8(q, zp) -> np.ndarray:
    """ReLU on quantized int8 values: real 0 is ``zp``, so ``max(q, zp)``."""
    q = _check_dtype("q", q, np.int8)
    zp = int(_check_int_range("zp", zp, -128, 127))
    return np.maximum(q, np.int8(zp))


def activation_range(kind: str, scale, zp, qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """Clamp bounds of a fused activation, as TFLite ``CalculateActivationRangeQuantized``.

    ``kind`` is ``'none'``, ``'relu'``, ``'relu6'`` or ``'relu_n1_to_1'``. The bound
    for a real value ``f`` is ``zp + round(f / scale)`` computed in float32 (TFLite
    divides two floats) with ties away from zero, then intersected with
    ``[qmin, qmax]``.
    """
    if kind not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {kind!r}")
    s = _check_scale("scale", scale)
    if s.ndim != 0:
        raise ValueError(f"activation scale must be a scalar (per-tensor), not shape {s.shape}")
    zp = int(_check_int_range("zp", zp, qmin, qmax))

    def q(f: float) -> int:
        return zp + int(round_half_away_from_zero(np.float32(f) / s))

    if kind == "relu":
        return max(qmin, q(0.0)), qmax
    if kind == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if kind == "relu_n1_to_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    return qmin, qmax


def fully_connected(x_q, x_zp, w_q, bias, m0, shift, out_zp, act_min=-128, act_max=127) -> np.ndarray:
    """int8 FullyConnected, per output channel, as TFLite ``reference_integer_ops::FullyConnectedPerChannel``.

    Parameters
    ----------
    x_q : int8 [M, K]
        Input activations, zero point ``x_zp``.
    x_zp : int
        Input zero point, -128..127.
    w_q : int8 [K, N]
        Weights, symmetric per output channel (zero point 0). (TFLite stores the
        filter as [N, K]; this is its transpose.)
    bias : int32 [N] or None
        Bias with scale ``S_in * S_w[n]``; None means zeros.
    m0 : int32 [N] (or scalar)
        Q31 multipliers from :func:`~celosia.sim.golden.requant.quantize_multiplier`.
    shift : int [N] (or scalar)
        Matching shifts (> 0 left, < 0 right).
    out_zp : int
        Output zero point, -128..127.
    act_min, act_max : int
        Output clamp (see :func:`activation_range`).

    Returns
    -------
    int8 [M, N]
        ``clamp(MBQM(sum_k (x - x_zp) * w + bias, m0, shift) + out_zp, act_min, act_max)``
        with int32 accumulation (wrapping, as two's complement hardware would).
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    w_q = _check_dtype("w_q", w_q, np.int8)
    if x_q.ndim != 2 or w_q.ndim != 2:
        raise ValueError(f"x_q must be [M, K] and w_q [K, N], not shapes {x_q.shape} and {w_q.shape}")
    (_, k), (kw, n) = x_q.shape, w_q.shape
    if k != kw:
        raise ValueError(f"x_q has K={k} columns but w_q has K={kw} rows")
    x_zp = int(_check_int_range("x_zp", x_zp, -128, 127))
    out_zp = int(_check_int_range("out_zp", out_zp, -128, 127))
    act_min = int(_check_int_range("act_min", act_min, -128, 127))
    act_max = int(_check_int_range("act_max", act_max, -128, 127))
    if act_min > act_max:
        raise ValueError(f"act_min must be <= act_max, not {act_min} > {act_max}")
    if bias is None:
        bias = np.zeros(n, dtype=np.int32)
    bias = _check_dtype("bias", bias, np.int32)
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), not {bias.shape}")
    m0 = np.broadcast_to(_check_int_range("m0", m0, 0, INT32_MAX), (n,))
    shift = np.broadcast_to(_check_int_range("shift", shift, -31, 30), (n,))

    # Exact in int64 for K < 2^32 / (255*255); wrap once to int32 at the end, which
    # equals wrapping after every addition (arithmetic mod 2^32).
    acc = (x_q.astype(np.int64) - x_zp) @ w_q.astype(np.int64)
    return requantize(acc, bias, m0, shift, out_zp, act_min, act_max)


def fully_connected_float(x, w, bias=None, activation: str = "none") -> np.ndarray:
    """Float reference: ``act(x @ w + bias)`` in float64, ``x`` [M, K], ``w`` [K, N], ``bias`` [N]."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x must be [M, K] and w [K, N], not shapes {x.shape} and {w.shape}")
    y = x @ w
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (w.shape[1],):
            raise ValueError(f"bias must have shape ({w.shape[1]},), not {bias.shape}")
        y = y + bias
    if activation == "relu":
        y = np.maximum(y, 0.0)
    elif activation == "relu6":
        y = np.clip(y, 0.0, 6.0)
    elif activation == "relu_n1_to_1":
        y = np.clip(y, -1.0, 1.0)
    return y
