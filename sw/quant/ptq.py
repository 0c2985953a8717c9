"""Post-training quantization helpers for the TFLite int8 scheme (ARCHITECTURE §2).

Activations: int8 asymmetric per tensor, parameters from calibrated min/max
(:func:`calibrate_ranges`, :func:`choose_activation_qparams`). Weights: int8
symmetric per output channel in -127..127 (:func:`quantize_weights_per_channel`).
Bias: int32 with scale ``S_in * S_w`` (:func:`quantize_bias`). Requantization:
Q31 multiplier and shift per output channel (:func:`requant_params`).

Scales are float32, as a ``.tflite`` file stores them; the formulas follow the
TFLite converter (``tensorflow/lite/tools/optimize/quantization_utils.cc``) and
kernels (``kernels/kernel_util.cc``) and each deviation is noted where it is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from celosia.sim.golden.ops import round_half_away_from_zero
from celosia.sim.golden.requant import INT32_MAX, quantize_multiplier

__all__ = [
    "QParams",
    "choose_activation_qparams",
    "calibrate_ranges",
    "quantize_weights_per_channel",
    "quantize_bias",
    "requant_params",
]

WEIGHT_QMAX = 127  # symmetric int8 weights use -127..127 so that -w is representable


@dataclass(frozen=True, eq=False)
class QParams:
    """Quantization parameters of one tensor: ``r = scale * (q - zero_point)``.

    ``scale`` is a float32 scalar (per tensor, ``axis`` None) or a float32 [C]
    array (per channel along ``axis``); ``zero_point`` an int32 scalar or [C]
    array broadcastable to ``scale``.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self):
        scale = np.asarray(self.scale, dtype=np.float32)
        zp = np.asarray(self.zero_point)
        if not np.issubdtype(zp.dtype, np.integer):
            raise ValueError(f"QParams zero_point must be integer, not {self.zero_point!r}")
        zp = zp.astype(np.int32)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"QParams scale must be finite and > 0, not {self.scale!r}")
        if self.axis is None:
            if scale.ndim != 0 or zp.ndim != 0:
                raise ValueError(
                    f"per-tensor QParams (axis None) need scalar scale and zero_point, "
                    f"not shapes {scale.shape} and {zp.shape}")
        else:
            if not isinstance(self.axis, (int, np.integer)):
                raise ValueError(f"QParams axis must be an int or None, not {self.axis!r}")
            if scale.ndim != 1 or zp.ndim > 1 or (zp.ndim == 1 and zp.shape != scale.shape):
                raise ValueError(
                    f"per-channel QParams (axis {self.axis}) need scale [C] and zero_point scalar or [C], "
                    f"not shapes {scale.shape} and {zp.shape}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp)

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def __repr__(self) -> str:
        return f"QParams(scale={self.scale.tolist()}, zero_point={self.zero_point.tolist()}, axis={self.axis})"


def _check_qrange(qmin, qmax):
    if not (isinstance(qmin, (int, np.integer)) and isinstance(qmax, (int, np.integer)) and qmin < qmax):
        raise ValueError(f"qmin < qmax must be integers, not qmin={qmin!r}, qmax={qmax!r}")


def choose_activation_qparams(min, max, qmin: int = -128, qmax: int = 127) -> QParams:  # noqa: A002
    """Asymmetric per-tensor parameters for a real range, as TFLite ``GetAsymmetricQuantizationParams``.

    The range is first widened to include 0 (so that real 0, padding and ReLU's
    floor, is exact); ``scale = (max - min) / (qmax - qmin)`` in float32; the zero
    point ``qmin - min / scale`` is rounded (ties away from zero) and clamped to
    ``[qmin, qmax]``.

    Deviation: for an all-zero range TFLite returns scale 0, which no kernel can
    divide by; we return scale 1.0 and zero point ``qmin`` (every value is 0 anyway).
    """
    _check_qrange(qmin, qmax)
    for name, v in (("min", min), ("max", max)):
        if not np.isfinite(v):
            raise ValueError(f"activation range {name} must be finite, not {v!r}")
    if min > max:
        raise ValueError(f"activation range min must be <= max, not min={min!r} > max={max!r}")
    f32 = np.float32
    lo = np.minimum(f32(min), f32(0.0))
    hi = np.maximum(f32(max), f32(0.0))
    qmin_f, qmax_f = f32(qmin), f32(qmax)
    scale = f32((hi - lo) / (qmax_f - qmin_f))
    if scale == 0:
        return QParams(scale=f32(1.0), zero_point=np.int32(qmin))
    zp_from_min = f32(qmin_f - lo / scale)
    if zp_from_min < qmin_f:
        zp = qmin
    elif zp_from_min > qmax_f:
        zp = qmax
    else:
        zp = int(round_half_away_from_zero(zp_from_min))
    return QParams(scale=scale, zero_point=np.int32(zp))


def calibrate_ranges(samples: Iterable[Mapping[str, object]],
                     ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, tuple[float, float]]:
    """Track the running min / max of named tensors over calibration samples.

    ``samples`` yields mappings ``{tensor name: array}`` (e.g. the activations of
    one batch). ``ranges`` continues an earlier calibration. Returns
    ``{name: (min, max)}`` as Python floats; feed each to
    :func:`choose_activation_qparams`.
    """
    out: dict[str, tuple[float, float]] = dict(ranges or {})
    seen = False
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise ValueError(f"calibration sample {i} must be a mapping of tensor name to array, "
                             f"not {type(sample).__name__}")
        seen = True
        for name, value in sample.items():
            a = np.asarray(value, dtype=np.float64)
            if a.size == 0:
                raise ValueError(f"calibration sample {i}: tensor {name!r} is empty")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"calibration sample {i}: tensor {name!r} contains NaN or infinity")
            lo, hi = float(a.min()), float(a.max())
            if name in out:
                lo, hi = min(lo, out[name][0]), max(hi, out[name][1])
            out[name] = (lo, hi)
    if not seen and not out:
        raise ValueError("calibration needs at least one sample, got none")
    return out


def quantize_weights_per_channel(w, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights, as TFLite ``SymmetricPerChannelQuantization``.

    ``scale[c] = max|w[..., c, ...]| / 127`` (float32) along ``axis`` (1 = output
    channel of a [K, N] matrix); ``q = clamp(round(w * (127 / max|w|)), -127, 127)``
    with the float32 arithmetic and ties-away rounding of the converter.

    Deviation: an all-zero channel gets scale 1.0, not TFLite's 0 (which makes its
    bias unrepresentable and its requantization multiplier 0); its weights are 0
    either way.

    Returns ``(w_q int8, scales float32 [w.shape[axis]])``.
    """
    w = np.asarray(w, dtype=np.float32)
    if w.ndim == 0:
        raise ValueError("weights must have at least one dimension, not a scalar")
    if not -w.ndim <= axis < w.ndim:
        raise ValueError(f"channel axis must be in {-w.ndim}..{w.ndim - 1} for weights of shape {w.shape}, not {axis}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or infinity")
    axis = axis % w.ndim
    other = tuple(d for d in range(w.ndim) if d != axis)
    half_range = np.max(np.abs(w), axis=other) if other else np.abs(w)
    zero = half_range == 0
    scales = np.where(zero, np.float32(1.0), half_range / np.float32(WEIGHT_QMAX)).astype(np.float32)
    inv = np.where(zero, np.float32(0.0), np.float32(WEIGHT_QMAX) / np.where(zero, 1, half_range)).astype(np.float32)
    bshape = [1] * w.ndim
    bshape[axis] = -1
    q = round_half_away_from_zero(w * inv.reshape(bshape))
    return np.clip(q, -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8), scales


def _scales(name: str, s) -> np.ndarray:
    s = np.asarray(s, dtype=np.float32)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be finite and > 0, not {s.tolist()!r}")
    return s


def quantize_bias(b, in_scale, w_scales) -> np.ndarray:
    """Bias -> int32 with scale ``in_scale * w_scales[n]`` so it adds straight into the accumulator.

    ``round(b / (S_in * S_w))`` with ties away from zero, computed in float64 from
    the float32 scales (more exact than the converter's float32 reciprocal; the
    two differ by at most 1 on values next to a tie). A bias that does not fit
    int32 is an error, not a silent clamp.
    """
    b = np.asarray(b, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"bias must be a vector [N], not shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("bias contains NaN or infinity")
    s_in = _scales("input scale", in_scale)
    if s_in.ndim != 0:
        raise ValueError(f"input scale must be a scalar (per-tensor), not shape {s_in.shape}")
    s_w = _scales("weight scales", w_scales)
    if s_w.ndim > 1 or (s_w.ndim == 1 and s_w.shape != b.shape):
        raise ValueError(f"weight scales must be a scalar or shape {b.shape}, not {s_w.shape}")
    step = s_in.astype(np.float64) * s_w.astype(np.float64)
    q = round_half_away_from_zero(b / step)
    bad = np.flatnonzero(np.abs(q) > INT32_MAX)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bias[{i}] = {float(b[i])!r} is {q[i]:.3g} steps of {np.broadcast_to(step, b.shape)[i]:.3g}: "
                         f"outside int32 (|q| <= {INT32_MAX})")
    return q.astype(np.int32)


def requant_params(in_scale, w_scales, out_scale) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel requantization ``(m0 int32 [N], shift int32 [N])`` for ``S_in * S_w[n] / S_out``.

    The real multiplier is formed in double from the float32 scales, as TFLite's
    ``PopulateConvolutionQuantizationParams`` (per-channel path) does, and split
    by :func:`~celosia.sim.golden.requant.quantize_multiplier` so that
    ``m0 * 2^(shift - 31)`` approximates it. (TFLite's per-tensor FullyConnected
    path rounds ``S_in * S_w`` to float32 first; pass per-tensor models through
    with their own stored values if that last bit matters.)
    """
    s_in = _scales("input scale", in_scale)
    s_out = _scales("output scale", out_scale)
    for name, s in (("input scale", s_in), ("output scale", s_out)):
        if s.ndim != 0:
            raise ValueError(f"{name} must be a scalar (per-tensor), not shape {s.shape}")
    s_w = np.atleast_1d(_scales("weight scales", w_scales))
    if s_w.ndim != 1:
        raise ValueError(f"weight scales must be a scalar or vector [N], not shape {s_w.shape}")
    m0 = np.empty(s_w.shape, dtype=np.int32)
    shift = np.empty(s_w.shape, dtype=np.int32)
    for n, sw in enumerate(s_w):
        real = float(s_in) * float(sw) / float(s_out)
        try:
            m0[n], shift[n] = quantize_multiplier(real)
        except ValueError as e:
            raise ValueError(f"requantization of channel {n} (S_in={float(s_in)!r}, S_w={float(sw)!r}, "
                             f"S_out={float(s_out)!r}): {e}") from None
    return m0, shift
