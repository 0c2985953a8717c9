"""Random quantized layers and the conv shapes that the compiler tests and the RTL
back-end tests share (``tests/conftest.py`` puts this folder on ``sys.path``)."""

import math

import numpy as np

from celosia.sim.golden import activation_range, conv_output_size, quantize_multiplier
from celosia.sw.quant.model import QLayer, QModel


def conv_layer(rng, name, in_shape, cout, k, stride=1, pad=0, groups=1, dilation=1, in_zp=0,
               activation="relu"):
    H, W, cin = in_shape
    kh, kw = (k, k) if isinstance(k, int) else k
    pads = (pad,) * 4 if isinstance(pad, int) else pad
    ho = conv_output_size(H, kh, stride, pads[0], pads[2], dilation)
    wo = conv_output_size(W, kw, stride, pads[1], pads[3], dilation)
    w = rng.integers(-127, 128, size=(cout, kh, kw, cin // groups)).astype(np.int8)
    K = kh * kw * cin // groups
    real = np.exp(rng.uniform(np.log(1e-3), np.log(1e-2), size=cout)) / math.sqrt(K)
    m0, shift = zip(*(quantize_multiplier(float(r)) for r in real))
    out_zp = int(rng.integers(-40, 40))
    act_min, act_max = activation_range(activation, 0.05, out_zp)
    return QLayer(name=name, op="conv", w=w, bias=rng.integers(-3000, 3000, cout).astype(np.int32),
                  m0=np.array(m0, np.int32), shift=np.array(shift, np.int32), in_scale=0.05,
                  in_zp=int(in_zp), out_scale=0.05, out_zp=out_zp, act_min=int(act_min),
                  act_max=int(act_max), activation=activation,
                  attrs={"stride": (stride, stride), "pads": pads, "groups": groups,
                         "dilation": (dilation, dilation)},
                  in_shape=(H, W, cin), out_shape=(ho, wo, cout))


def hw_macs(layer, rows, cols, dataflow=None):
    """MACs per sample the hardware counts for conv ``layer`` on a ``rows x cols`` array:
    the compiler merges its groups ``q`` at a time into block-diagonal ones
    (``sw/compiler/groups.py``), ``q`` the largest divisor of ``groups`` for which the
    merged group still fits one weight tile (``q * cin_g <= rows``, ``q * cout_g <= cols``;
    1 if none), and the zero weights count. On ``ws`` / ``os`` (with an input zero point
    of 0) and ``feie`` a kernel row's GEMMs leave out the output rows whose input row is
    padding (docs/compiler.md, "Padding rows"): counted here as output rows ``ho`` x kernel
    rows ``fh`` with ``ho*stride - pad_top + fh*dil`` inside the image. (Only for a conv
    with a kernel row inside the image for every output row, as "same" padding has, whose
    every tile's first GEMM, kept whole, is that row's; ``dataflow`` None or ``rs``: every
    tap.)"""
    groups = layer.attrs.get("groups", 1)
    cin_g, cout_g = layer.w.shape[3], layer.w.shape[0] // groups
    q = max([d for d in range(2, groups + 1) if groups % d == 0 and d * cin_g <= rows and d * cout_g <= cols],
            default=1)
    if dataflow not in ("ws", "os", "feie") or (dataflow != "feie" and layer.in_zp != 0):
        return layer.macs * q
    H, Ho, Fh = layer.in_shape[0], layer.out_shape[0], layer.w.shape[1]
    a = layer.attrs
    (sh, _), (dh, _), pt = a.get("stride", (1, 1)), a.get("dilation", (1, 1)), a.get("pads", (0,) * 4)[0]
    inside = [sum(0 <= ho * sh - pt + fh * dh < H for ho in range(Ho)) for fh in range(Fh)]
    assert max(inside) == Ho, "no kernel row inside the image for every output row"
    return layer.macs * q * sum(inside) // (Ho * Fh)


#: in_shape, cout, k, stride, pad, groups: kernels 1..11, strides 1/2/4, grouped,
#: depthwise, non-square, channel counts that are not multiples of the arrays.
CONV_CASES = [
    # in_shape, cout, k, stride, pad, groups
    ((6, 7, 5), 9, 1, 1, 0, 1),
    ((8, 8, 3), 10, 3, 1, 1, 1),
    ((9, 10, 4), 6, 5, 2, 2, 1),
    ((12, 12, 3), 5, 7, 2, 3, 1),
    ((23, 23, 3), 4, 11, 4, 0, 1),
    ((8, 9, 6), 6, 3, 1, 1, 2),      # grouped (AlexNet-style)
    ((7, 7, 5), 5, 3, 2, 1, 5),      # depthwise
    ((10, 6, 9), 7, (3, 1), 1, (1, 0, 1, 0), 1),  # non-square kernel, asymmetric padding
]


def random_fc_model(rng, sizes, name="rand"):
    """A random int8 MLP with layer sizes ``sizes`` (ReLU between layers)."""
    layers = []
    in_zp = int(rng.integers(-20, 20))
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        out_zp = int(rng.integers(-10, 10))
        relu = i < len(sizes) - 2
        mults = [quantize_multiplier(float(m)) for m in rng.uniform(1e-4, 4e-3, n)]
        layers.append(QLayer(
            name=f"fc{i}", op="fc", w=rng.integers(-127, 128, (k, n)).astype(np.int8),
            bias=rng.integers(-3000, 3000, n).astype(np.int32),
            m0=np.array([m for m, _ in mults], np.int32), shift=np.array([s for _, s in mults], np.int32),
            in_scale=0.05, in_zp=in_zp, out_scale=0.05, out_zp=out_zp,
            act_min=out_zp if relu else -128, act_max=127, activation="relu" if relu else "none"))
        in_zp = out_zp
    return QModel(name=name, layers=layers, input_scale=0.05, input_zp=layers[0].in_zp)
