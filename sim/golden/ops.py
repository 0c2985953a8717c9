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

from .requant import INT32_MAX, multiply_by_quantized_multiplier, quantize_multiplier, requantize

__all__ = [
    "round_half_away_from_zero",
    "quantize",
    "dequantize",
    "relu_int8",
    "activation_range",
    "fully_connected",
    "fully_connected_float",
    "clamp_int8",
    "conv_output_size",
    "ceil_mode_padding",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "global_avg_pool_params",
    "global_avg_pool_requant",
    "add",
    "add_params",
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


def quantize(x_float, scale, zero_point, qmin: int = -128, qmax: int = 127, *,
             division: str = "double") -> np.ndarray:
    """Float -> int8, as TFLite's reference ``AffineQuantize``.

    ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` where ``x`` is float32,
    the division is done in double (TFLite holds the scale as ``double``) and
    ``round`` is ``std::round``: **ties away from zero** (2.5 -> 3, -2.5 -> -3).
    ONNX ``QuantizeLinear`` rounds ties to even instead, so the two differ only on
    exact ties. ``division="float32"`` divides in float32 instead, as LiteRT's
    QUANTIZE op does (measured with ai-edge-litert 2.3: float32 ``x / scale``
    rounds some values next to a tie differently from the double division).

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
    if division not in ("double", "float32"):
        raise ValueError(f"division must be 'double' or 'float32', not {division!r}")
    wide = np.float64 if division == "double" else np.float32
    s = _check_scale("scale", scale).astype(wide)
    zp = _check_int_range("zero_point", zero_point, qmin, qmax)
    with np.errstate(over="ignore"):
        q = round_half_away_from_zero(x.astype(wide) / s) + zp
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


def fully_connected(x_q, x_zp, w_q, bias, m0, shift, out_zp, act_min=-128, act_max=127,
                    single_round: bool = False) -> np.ndarray:
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
    single_round : bool
        TFLite's single-rounding requantization (LiteRT's FULLY_CONNECTED) instead of the
        double rounding (:func:`~celosia.sim.golden.requant.requantize`).

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
    act_min, act_max = _check_act(act_min, act_max)
    bias, m0, shift = _check_channel_params(n, bias, m0, shift)

    # Exact in int64 for K < 2^32 / (255*255); wrap once to int32 at the end, which
    # equals wrapping after every addition (arithmetic mod 2^32).
    acc = (x_q.astype(np.int64) - x_zp) @ w_q.astype(np.int64)
    return requantize(acc, bias, m0, shift, out_zp, act_min, act_max, single_round)


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


# --- CNN operators: clamp, pooling, element-wise add (NHWC) ---


def _pair(name: str, v) -> tuple[int, int]:
    """``v`` or ``(v_h, v_w)`` -> ``(h, w)`` positive ints."""
    t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != 2 or not all(isinstance(e, (int, np.integer)) and e >= 1 for e in t):
        raise ValueError(f"{name} must be a positive int or a pair of them, not {v!r}")
    return int(t[0]), int(t[1])


def _padding4(padding) -> tuple[int, int, int, int]:
    """``p``, ``(ph, pw)`` or ``(top, left, bottom, right)`` -> ``(top, left, bottom, right)``."""
    if isinstance(padding, (int, np.integer)):
        t = (padding,) * 4
    else:
        t = tuple(padding)
        if len(t) == 2:
            t = (t[0], t[1], t[0], t[1])
    if len(t) != 4 or not all(isinstance(e, (int, np.integer)) and e >= 0 for e in t):
        raise ValueError(f"padding must be (top, left, bottom, right) non-negative ints, not {padding!r}")
    return tuple(int(e) for e in t)


def _check_channel_params(n, bias, m0, shift):
    """The per-output-channel bias (int32, None = zeros), M0 and shift of ``n`` channels,
    checked and broadcast to ``[n]``."""
    if bias is None:
        bias = np.zeros(n, dtype=np.int32)
    bias = _check_dtype("bias", bias, np.int32)
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), not {bias.shape}")
    m0 = np.broadcast_to(_check_int_range("m0", m0, 0, INT32_MAX), (n,))
    shift = np.broadcast_to(_check_int_range("shift", shift, -31, 30), (n,))
    return bias, m0, shift


def _check_act(act_min, act_max) -> tuple[int, int]:
    act_min = int(_check_int_range("act_min", act_min, -128, 127))
    act_max = int(_check_int_range("act_max", act_max, -128, 127))
    if act_min > act_max:
        raise ValueError(f"act_min must be <= act_max, not {act_min} > {act_max}")
    return act_min, act_max


def clamp_int8(q, act_min=-128, act_max=127) -> np.ndarray:
    """``clamp(q, act_min, act_max)`` -> int8: ReLU / ReLU6 / Clip on quantized values.

    Take the bounds from :func:`activation_range` (``'relu6'``: ``(max(-128, Z),
    min(127, Z + round(6 / S)))``); ONNX ``Clip(min, max)`` is
    ``(Z + round(min / S), Z + round(max / S))`` intersected with -128..127.
    """
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"clamp_int8 input must be an integer array, not {q.dtype.name}")
    act_min, act_max = _check_act(act_min, act_max)
    return np.clip(q.astype(np.int64), act_min, act_max).astype(np.int8)


def conv_output_size(in_size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a convolution / pooling window along one axis.

    Floor mode (default): ``(in + pads - eff) // stride + 1`` with ``eff = dilation *
    (kernel - 1) + 1``. ``ceil_mode`` (ONNX / PyTorch pooling): the division rounds up,
    but a last window that would start in the trailing padding (at or after
    ``in_size + pad_before``) is dropped, so every window holds at least one input
    element. Raises ``ValueError`` if the window does not fit the padded input.
    """
    eff = dilation * (kernel - 1) + 1
    span = in_size + pad_before + pad_after - eff
    if span < 0:
        raise ValueError(f"window {eff} does not fit the padded input {in_size + pad_before + pad_after}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= in_size + pad_before:
        out -= 1
    return out


def ceil_mode_padding(hw, kernel, stride, padding) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` padding whose floor-mode windows are the ceil-mode
    windows of ``padding``: bottom / right grow by the overhang of the extra last window.

    ``hw`` is the input's ``(H, W)``. For max pooling the extra padding never wins (it
    is ignored like any padding), so ``max_pool(..., padding=ceil_mode_padding(...))``
    is ONNX ``MaxPool`` with ``ceil_mode=1``.
    """
    kh, kw = _pair("kernel", kernel)
    sh, sw = _pair("stride", stride)
    top, left, bottom, right = _padding4(padding)
    ho = conv_output_size(hw[0], kh, sh, top, bottom, ceil_mode=True)
    wo = conv_output_size(hw[1], kw, sw, left, right, ceil_mode=True)
    return (top, left, max(bottom, (ho - 1) * sh + kh - hw[0] - top),
            max(right, (wo - 1) * sw + kw - hw[1] - left))


def _pool_windows(x, kernel, stride, padding, pad_value):
    """Padded NHWC ``x`` -> list of the Kh*Kw tap views [N, Ho, Wo, C] (TFLite window geometry)."""
    if x.ndim != 4:
        raise ValueError(f"x must be [N, H, W, C], not shape {x.shape}")
    kh, kw = _pair("kernel", kernel)
    sh, sw = _pair("stride", stride)
    top, left, bottom, right = _padding4(padding)
    n, h, w, c = x.shape
    hp, wp = h + top + bottom, w + left + right
    if hp < kh or wp < kw:
        raise ValueError(f"kernel {(kh, kw)} does not fit the padded input {(hp, wp)}")
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    xp = np.full((n, hp, wp, c), pad_value, dtype=x.dtype)
    xp[:, top:top + h, left:left + w, :] = x
    return [xp[:, fy:fy + sh * (ho - 1) + 1:sh, fx:fx + sw * (wo - 1) + 1:sw]
            for fy in range(kh) for fx in range(kw)]


def _valid_counts(x_shape, kernel, stride, padding) -> np.ndarray:
    """Number of in-image taps of every window, [1, Ho, Wo, 1] (TFLite's ``filter_count``)."""
    ones = np.ones((1, x_shape[1], x_shape[2], 1), dtype=np.int64)
    count = sum(_pool_windows(ones, kernel, stride, padding, 0))
    if np.any(count == 0):
        raise ValueError("a pooling window lies entirely in the padding (TFLite rejects it)")
    return count


def max_pool(x_q, kernel, stride=None, padding=(0, 0, 0, 0), act_min=-128, act_max=127,
             ceil_mode: bool = False) -> np.ndarray:
    """int8 MaxPool, as TFLite ``reference_integer_ops::MaxPool`` (and ONNX MaxPool).

    Padding positions are ignored (never win the max). ``stride`` defaults to
    ``kernel``; ``padding`` is ``(top, left, bottom, right)``. Input and output share
    scale and zero point. Returns int8 [N, Ho, Wo, C], ``Ho = (H + top + bottom - Kh) // Sh + 1``,
    or with ``ceil_mode`` (ONNX ``ceil_mode=1``) that division rounded up, less a last
    window that would start in the bottom padding (:func:`conv_output_size`); the
    extra windows overhang the padded input and take the max of the elements they cover.
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    act_min, act_max = _check_act(act_min, act_max)
    stride = kernel if stride is None else stride
    if ceil_mode:
        if x_q.ndim != 4:
            raise ValueError(f"x must be [N, H, W, C], not shape {x_q.shape}")
        padding = ceil_mode_padding(x_q.shape[1:3], kernel, stride, padding)
    _valid_counts(x_q.shape, kernel, stride, padding)
    taps = _pool_windows(x_q.astype(np.int64), kernel, stride, padding, np.iinfo(np.int64).min)
    return np.clip(np.maximum.reduce(taps), act_min, act_max).astype(np.int8)


def _div_round_half_away(acc, count) -> np.ndarray:
    """TFLite's ``acc > 0 ? (acc + count/2) / count : (acc - count/2) / count`` (C division)."""
    acc = np.asarray(acc, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    return np.where(acc > 0, (acc + half) // count, -((-acc + half) // count))


def avg_pool(x_q, kernel, stride=None, padding=(0, 0, 0, 0), count_include_pad: bool = False,
             x_zp=None, act_min=-128, act_max=127) -> np.ndarray:
    """int8 AveragePool, as TFLite ``reference_integer_ops::AveragePool``.

    Input and output share scale and zero point. The raw int8 values of a window
    are summed in int32 and divided by the tap count with rounding half away from
    zero, ``acc > 0 ? (acc + n/2) / n : (acc - n/2) / n`` (C division), then clamped.

    ``count_include_pad=False`` (TFLite, ONNX default): padding taps are ignored and
    ``n`` counts the in-image taps only. ``count_include_pad=True`` (ONNX option, not
    in TFLite): padding taps hold real 0, i.e. ``x_zp`` (required then), and
    ``n = Kh * Kw``.
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    act_min, act_max = _check_act(act_min, act_max)
    stride = kernel if stride is None else stride
    if count_include_pad:
        if x_zp is None:
            raise ValueError("count_include_pad=True needs x_zp (the value of the padding)")
        x_zp = int(_check_int_range("x_zp", x_zp, -128, 127))
        kh, kw = _pair("kernel", kernel)
        taps = _pool_windows(x_q.astype(np.int64), kernel, stride, padding, x_zp)
        count = np.int64(kh * kw)
    else:
        count = _valid_counts(x_q.shape, kernel, stride, padding)
        taps = _pool_windows(x_q.astype(np.int64), kernel, stride, padding, 0)
    acc = sum(taps)
    return np.clip(_div_round_half_away(acc, count), act_min, act_max).astype(np.int8)


def global_avg_pool(x_q, act_min=-128, act_max=127) -> np.ndarray:
    """int8 GlobalAveragePool [N, H, W, C] -> [N, 1, 1, C] when input and output qparams are equal.

    Defined as :func:`avg_pool` over the whole ``H x W`` window (TFLite
    AVERAGE_POOL_2D with filter = input size): ``round_half_away(sum q / (H*W))``.
    TFLite's MEAN op (what the converter emits for ``reduce_mean``) has a different
    int8 path; it is not this. For different input / output qparams use
    :func:`global_avg_pool_requant`.
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    if x_q.ndim != 4:
        raise ValueError(f"x must be [N, H, W, C], not shape {x_q.shape}")
    return avg_pool(x_q, kernel=x_q.shape[1:3], stride=1, act_min=act_min, act_max=act_max)


def global_avg_pool_params(in_scale, out_scale, count: int) -> tuple[int, int]:
    """``(m0, shift)`` for :func:`global_avg_pool_requant`: ``quantize_multiplier(S_in / (S_out * count))``.

    The multiplier is formed in double from the float32 scales.
    """
    s_in = float(_check_scale("in_scale", in_scale))
    s_out = float(_check_scale("out_scale", out_scale))
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    return quantize_multiplier(s_in / (s_out * int(count)))


def global_avg_pool_requant(x_q, in_zp, out_zp, m0, shift, act_min=-128, act_max=127) -> np.ndarray:
    """int8 GlobalAveragePool with its own output qparams, [N, H, W, C] -> [N, 1, 1, C].

    ``acc = sum_{h,w} (x - in_zp)`` in int32, then
    ``clamp(MBQM(acc, m0, shift) + out_zp, act_min, act_max)`` with ``(m0, shift)``
    from :func:`global_avg_pool_params` (multiplier ``S_in / (S_out * H * W)``):
    the same PPU requantization as a conv with bias 0.
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    if x_q.ndim != 4:
        raise ValueError(f"x must be [N, H, W, C], not shape {x_q.shape}")
    in_zp = int(_check_int_range("in_zp", in_zp, -128, 127))
    out_zp = int(_check_int_range("out_zp", out_zp, -128, 127))
    act_min, act_max = _check_act(act_min, act_max)
    m0 = _check_int_range("m0", m0, 0, INT32_MAX)
    shift = _check_int_range("shift", shift, -31, 30)
    acc = (x_q.astype(np.int64) - in_zp).sum(axis=(1, 2), keepdims=True)
    return requantize(acc, 0, m0, shift, out_zp, act_min, act_max)


def _quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplierSmallerThanOneExp``: 0 < real < 1, shift <= 0."""
    if not (0.0 < real < 1.0):
        raise ValueError(f"multiplier must be in (0, 1), not {real}")
    m0, shift = quantize_multiplier(real)
    if shift > 0:  # cannot happen for real < 1; kept as TFLite's TFLITE_CHECK_LE(shift, 0)
        raise ValueError(f"multiplier {real} gave shift {shift} > 0")
    return m0, shift


def add_params(a_scale, b_scale, out_scale, left_shift: int = 20) -> dict:
    """Quantized Add parameters exactly as TFLite's ``add.cc`` Prepare (int8 path).

    ``twice_max = 2 * max(S_a, S_b)``; ``real_a = S_a / twice_max``, ``real_b = S_b /
    twice_max``, ``real_out = twice_max / ((1 << left_shift) * S_out)`` (the
    denominator in float32, as C's ``int * float``; exact), each split by
    ``QuantizeMultiplierSmallerThanOneExp``.

    Returns a dict with keys ``a_m0, a_shift, b_m0, b_shift, out_m0, out_shift,
    left_shift`` (shifts <= 0), ready for ``add(**params, ...)`` together with the
    zero points and clamp.
    """
    sa = np.float32(_check_scale("a_scale", a_scale))
    sb = np.float32(_check_scale("b_scale", b_scale))
    so = np.float32(_check_scale("out_scale", out_scale))
    if not isinstance(left_shift, (int, np.integer)) or not 0 <= left_shift <= 22:
        raise ValueError(f"left_shift must be an int in 0..22, not {left_shift!r}")
    twice_max = 2.0 * float(max(sa, sb))
    real_a = float(sa) / twice_max
    real_b = float(sb) / twice_max
    real_out = twice_max / float(np.float32((1 << int(left_shift)) * so))
    a_m0, a_shift = _quantize_multiplier_smaller_than_one_exp(real_a)
    b_m0, b_shift = _quantize_multiplier_smaller_than_one_exp(real_b)
    out_m0, out_shift = _quantize_multiplier_smaller_than_one_exp(real_out)
    return dict(a_m0=a_m0, a_shift=a_shift, b_m0=b_m0, b_shift=b_shift,
                out_m0=out_m0, out_shift=out_shift, left_shift=int(left_shift))


def add(a_q, a_zp, a_m0, a_shift, b_q, b_zp, b_m0, b_shift, out_zp, out_m0, out_shift,
        left_shift: int = 20, act_min=-128, act_max=127) -> np.ndarray:
    """int8 element-wise Add (same shapes), as TFLite ``reference_integer_ops::Add`` (``AddFunc``).

    ``MBQM1(x, m, s) = RoundingDivideByPOT(SRDHM(x, m), -s)`` (``MultiplyByQuantized
    MultiplierSmallerThanOneExp``, ``s <= 0``)::

        a' = MBQM1((a - a_zp) << left_shift, a_m0, a_shift)
        b' = MBQM1((b - b_zp) << left_shift, b_m0, b_shift)
        out = clamp(MBQM1(a' + b', out_m0, out_shift) + out_zp, act_min, act_max)

    Parameters from :func:`add_params`. With int8 inputs and ``left_shift <= 22``
    nothing overflows int32 (``255 << 22 < 2^30``).
    """
    a_q = _check_dtype("a_q", a_q, np.int8)
    b_q = _check_dtype("b_q", b_q, np.int8)
    if a_q.shape != b_q.shape:
        raise ValueError(f"a_q and b_q must have the same shape, not {a_q.shape} and {b_q.shape}")
    a_zp = int(_check_int_range("a_zp", a_zp, -128, 127))
    b_zp = int(_check_int_range("b_zp", b_zp, -128, 127))
    out_zp = int(_check_int_range("out_zp", out_zp, -128, 127))
    if not isinstance(left_shift, (int, np.integer)) or not 0 <= left_shift <= 22:
        raise ValueError(f"left_shift must be an int in 0..22, not {left_shift!r}")
    act_min, act_max = _check_act(act_min, act_max)
    m = {}
    for name, m0, shift in (("a", a_m0, a_shift), ("b", b_m0, b_shift), ("out", out_m0, out_shift)):
        m[name] = (int(_check_int_range(f"{name}_m0", m0, 0, INT32_MAX)),
                   int(_check_int_range(f"{name}_shift", shift, -31, 0)))
    a_s = multiply_by_quantized_multiplier((a_q.astype(np.int64) - a_zp) << left_shift, *m["a"])
    b_s = multiply_by_quantized_multiplier((b_q.astype(np.int64) - b_zp) << left_shift, *m["b"])
    raw = multiply_by_quantized_multiplier(a_s + b_s, *m["out"]) + out_zp
    return np.clip(raw, act_min, act_max).astype(np.int8)


def avg_pool_requant(x_q, kernel, stride, padding, in_zp, out_zp, m0, shift,
                     act_min=-128, act_max=127) -> np.ndarray:
    """int8 average pooling as the accelerator computes it (and TFLite's MEAN does).

    ``acc = sum over the window of (x - in_zp)`` (padded taps hold ``in_zp`` and add
    0: ONNX ``count_include_pad=1`` when padded), then
    ``clamp(MBQM(acc, m0, shift) + out_zp, act_min, act_max)`` with
    ``(m0, shift) = quantize_multiplier(S_in / (S_out * Kh * Kw))``
    (:func:`global_avg_pool_params` with ``count = Kh * Kw``). This differs from
    TFLite's AveragePool kernel (integer division with rounding, shared qparams)
    by at most one step; the requantized form lets input and output scales differ
    and needs no divider.
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    in_zp = int(_check_int_range("in_zp", in_zp, -128, 127))
    out_zp = int(_check_int_range("out_zp", out_zp, -128, 127))
    act_min, act_max = _check_act(act_min, act_max)
    taps = _pool_windows(x_q.astype(np.int64) - in_zp, kernel, stride or kernel, padding, 0)
    return requantize(sum(taps), 0, m0, shift, out_zp, act_min, act_max)
