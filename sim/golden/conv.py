"""Golden int8 2-D convolution (regular, grouped, depthwise), NHWC.

``conv2d`` is TFLite's ``reference_integer_ops::ConvPerChannel`` and, for
``groups == Cin``, ``reference_integer_ops::DepthwiseConvPerChannel``:

    acc[n, y, x, co] = sum_{fy, fx, ci} (x[n, y*sh - top + fy*dh, x*sw - left + fx*dw, g*Cg + ci] - x_zp)
                                        * w[co, fy, fx, ci]            (g = co // (Cout / groups))
    out = clamp(MBQM(acc + bias[co], m0[co], shift[co]) + out_zp, act_min, act_max)

Taps that fall in the padding are skipped, exactly as TFLite skips them
(``is_point_inside_image``); that is the same as padding the input with ``x_zp``
(real 0), which is how it is computed here. Unlike TFLite, which takes the
top/left padding and derives the rest from the output shape, the padding is given
explicitly for all four sides (ONNX ``pads`` order ``top, left, bottom, right``);
:func:`same_padding` gives TFLite's ``SAME``.

Weights are ``[Cout, Fh, Fw, Cin / groups]`` (TFLite's conv filter layout, OHWI).
TFLite's depthwise filter ``[1, Fh, Fw, Cin * mult]`` with output channel
``ci * mult + m`` is this layout with ``groups = Cin``: ``w[co, fy, fx, 0] =
dw_filter[0, fy, fx, co]``.
"""

from __future__ import annotations

import numpy as np

from .ops import (_check_act, _check_channel_params, _check_dtype, _check_int_range, _pair, _padding4,
                  conv_output_size)
from .requant import requantize

__all__ = ["conv2d", "conv2d_float", "conv_output_size", "same_padding", "conv_windows", "grouped_conv"]


def same_padding(in_hw, kernel, stride=(1, 1), dilation=(1, 1)) -> tuple[int, int, int, int]:
    """TFLite ``SAME`` padding as ``(top, left, bottom, right)`` (``ComputePaddingHeightWidth``).

    ``out = ceil(in / stride)``; the total padding is split with the odd pixel at
    the bottom / right.
    """
    pads = []
    for i, k, s, d in zip(_pair("in_hw", in_hw), _pair("kernel", kernel), _pair("stride", stride),
                          _pair("dilation", dilation)):
        out = (i + s - 1) // s
        total = max((out - 1) * s + d * (k - 1) + 1 - i, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return top, left, bottom, right


def _conv_geometry(x_shape, w_shape, stride, padding, groups, dilation):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"x must be [N, H, W, Cin] and w [Cout, Fh, Fw, Cin/groups], "
                         f"not shapes {x_shape} and {w_shape}")
    n, h, w, cin = x_shape
    cout, fh, fw, cg = w_shape
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer, not {groups!r}")
    if cin % groups or cout % groups:
        raise ValueError(f"Cin={cin} and Cout={cout} must be multiples of groups={groups}")
    if cg != cin // groups:
        raise ValueError(f"w has {cg} input channels per filter, expected Cin/groups = {cin // groups}")
    sh, sw = _pair("stride", stride)
    dh, dw = _pair("dilation", dilation)
    top, left, bottom, right = _padding4(padding)
    ho = conv_output_size(h, fh, sh, top, bottom, dh)
    wo = conv_output_size(w, fw, sw, left, right, dw)
    return (n, h, w, cin, cout, fh, fw, cg, sh, sw, dh, dw, top, left, bottom, right, ho, wo)


def conv_windows(x: np.ndarray, kernel, stride, dilation, pads, out_hw, pad_value=0.0) -> np.ndarray:
    """The windows of a convolution or pooling over NHWC ``x``, as strided views.

    Parameters
    ----------
    x : array [N, H, W, C]
        Any dtype; the padding takes ``pad_value`` in that dtype.
    kernel, stride, dilation : (h, w)
    pads : (top, left, bottom, right)
    out_hw : (Ho, Wo)
        The output size. With ``ceil_mode`` pooling it may need rows / columns beyond
        the stated bottom / right pads; they are added (filled with ``pad_value``).

    Returns
    -------
    array [N, Ho, Wo, C, kh, kw]
        Element ``[n, y, x, c, i, j]`` is the padded input at row
        ``y * sh + i * dh - top``, column ``x * sw + j * dw - left``, channel ``c``.
    """
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr), (ho, wo) = kernel, stride, dilation, pads, out_hw
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    pb = max(pb, (ho - 1) * sh + eh - x.shape[1] - pt)
    pr = max(pr, (wo - 1) * sw + ew - x.shape[2] - pl)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=pad_value)
    v = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(1, 2))
    return v[:, :(ho - 1) * sh + 1:sh, :(wo - 1) * sw + 1:sw, :, ::dh, ::dw]


def grouped_conv(x: np.ndarray, w: np.ndarray, stride, dilation, pads, groups: int, out_hw) -> np.ndarray:
    """The float convolution (no bias, no activation), zero padding, in ``x``'s dtype.

    ``x`` NHWC ``[N, H, W, Cin]``, ``w`` ``[Cout, Fh, Fw, Cin / groups]``, the window
    arguments as :func:`conv_windows`; returns ``[N, Ho, Wo, Cout]``. Output channel
    ``co`` reads the input channels of group ``co // (Cout / groups)``. One contraction
    over every tap (``einsum``): the float reference of the high-level graph
    (:mod:`celosia.sw.graph.reference`, float32) and :func:`conv2d_float` (float64) are
    both this function.
    """
    cout, fh, fw, cg = w.shape
    p = conv_windows(x, (fh, fw), stride, dilation, pads, out_hw)   # [N, Ho, Wo, C, fh, fw]
    p = p.reshape(p.shape[:3] + (groups, cg, fh, fw))                # [N, Ho, Wo, G, Cg, fh, fw]
    wg = w.reshape(groups, cout // groups, fh, fw, cg)               # [G, Og, fh, fw, Cg]
    y = np.einsum("nhwgcij,goijc->nhwgo", p, wg, optimize=True)
    return y.reshape(y.shape[:3] + (cout,))


def _conv_core_int(x, w, stride, padding, groups, dilation):
    """int64 sum over taps of x_padded * w, grouped, one tap at a time (exact, and faster than
    :func:`grouped_conv`'s single contraction on integers); x [N,H,W,Cin] (zero point already
    subtracted: the padding is 0), w [Cout,Fh,Fw,Cg] -> [N,Ho,Wo,Cout]."""
    dtype = np.int64
    (n, h, wd, cin, cout, fh, fw, cg, sh, sw, dh, dw,
     top, left, bottom, right, ho, wo) = _conv_geometry(x.shape, w.shape, stride, padding, groups, dilation)
    xp = np.zeros((n, h + top + bottom, wd + left + right, cin), dtype=dtype)
    xp[:, top:top + h, left:left + wd, :] = x
    xp = xp.reshape(n, h + top + bottom, wd + left + right, groups, cg)
    wg = w.astype(dtype).reshape(groups, cout // groups, fh, fw, cg)
    acc = np.zeros((n, ho, wo, groups, cout // groups), dtype=dtype)
    for fy in range(fh):
        y0 = fy * dh
        for fx in range(fw):
            x0 = fx * dw
            tap = xp[:, y0:y0 + sh * (ho - 1) + 1:sh, x0:x0 + sw * (wo - 1) + 1:sw]  # [N,Ho,Wo,G,Cg]
            acc += np.einsum("nhwgc,goc->nhwgo", tap, wg[:, :, fy, fx, :])
    return acc.reshape(n, ho, wo, cout)


def conv2d(x_q, x_zp, w_q, bias, m0, shift, out_zp, act_min=-128, act_max=127,
           stride=(1, 1), padding=(0, 0, 0, 0), groups: int = 1, dilation=(1, 1),
           single_round: bool = False) -> np.ndarray:
    """int8 Conv2D / grouped / depthwise conv, per output channel, as TFLite ``ConvPerChannel``.

    Parameters
    ----------
    x_q : int8 [N, H, W, Cin]
        Input activations, zero point ``x_zp`` (-128..127).
    w_q : int8 [Cout, Fh, Fw, Cin / groups]
        Weights, symmetric per output channel.
    bias : int32 [Cout] or None
        Bias at scale ``S_in * S_w[co]``; None means zeros.
    m0, shift : int [Cout] (or scalars)
        Requantization multipliers / shifts (:func:`~celosia.sim.golden.requant.quantize_multiplier`).
    out_zp, act_min, act_max : int
        Output zero point and clamp.
    stride, dilation : int or (h, w)
    padding : int, (h, w) or (top, left, bottom, right)
        Padding taps contribute nothing (as if the input were ``x_zp``, real 0).
    groups : int
        1: regular conv; ``Cin``: depthwise (channel multiplier ``Cout / Cin``);
        output channel ``co`` reads input channels of group ``co // (Cout / groups)``.
    single_round : bool
        TFLite's single-rounding requantization instead of the double rounding
        (:func:`~celosia.sim.golden.requant.requantize`).

    Returns
    -------
    int8 [N, Ho, Wo, Cout]
    """
    x_q = _check_dtype("x_q", x_q, np.int8)
    w_q = _check_dtype("w_q", w_q, np.int8)
    x_zp = int(_check_int_range("x_zp", x_zp, -128, 127))
    out_zp = int(_check_int_range("out_zp", out_zp, -128, 127))
    act_min, act_max = _check_act(act_min, act_max)
    cout = w_q.shape[0] if w_q.ndim == 4 else None
    acc = _conv_core_int(x_q.astype(np.int64) - x_zp, w_q, stride, padding, groups, dilation)
    bias, m0, shift = _check_channel_params(cout, bias, m0, shift)
    # int64 sums are exact; requantize wraps acc + bias to int32 once (= wrapping every add).
    return requantize(acc, bias, m0, shift, out_zp, act_min, act_max, single_round)


def conv2d_float(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), groups: int = 1,
                 dilation=(1, 1)) -> np.ndarray:
    """Float reference in float64: same layouts and semantics as :func:`conv2d`, zero padding
    (:func:`grouped_conv`)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    (*_, sh, sw, dh, dw, top, left, bottom, right, ho, wo) = _conv_geometry(
        x.shape, w.shape, stride, padding, groups, dilation)
    y = grouped_conv(x, w, (sh, sw), (dh, dw), (top, left, bottom, right), groups, (ho, wo))
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (w.shape[0],):
            raise ValueError(f"b must have shape ({w.shape[0]},), not {b.shape}")
        y = y + b
    return y
