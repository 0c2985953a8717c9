"""Single-op int8 TFLite models with random quantization parameters (incl. the corners),
and a LiteRT reference runner. Shared by the TFLite tests."""

from __future__ import annotations

import numpy as np

from celosia.sw.importer.tflite_builder import TFLiteBuilder

#: The single-op cases: name -> builder.
OPS = ("conv", "conv_same_stride", "conv_dilated", "depthwise", "fc", "fc_per_tensor", "add",
       "maxpool", "avgpool", "mean", "reshape_fc", "conv_relu6", "pad_conv", "pad_depthwise",
       "requantize")


def litert(data: bytes, x: np.ndarray) -> np.ndarray:
    """Run ``data`` on LiteRT's reference kernels (``BUILTIN_REF``), one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for sample in x:
        it.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        it.invoke()
        ys.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(ys)


def assert_cli_one_line_error(path, words) -> None:
    """``celosia run PATH --random 1`` exits 1 with one line on stderr holding every word of
    ``words`` (and no traceback). Shared by the quantized-model importers' tests."""
    import io
    from contextlib import redirect_stderr

    from celosia.sw.cli import main
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["run", str(path), "--random", "1"]) == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    for w in words:
        assert w in lines[0], lines[0]


def _act_q(rng, corner: bool):
    """A per-tensor activation (scale, zero point); corners: tiny / huge scales, zp at the ends."""
    if corner:
        return float(np.float32(2.0 ** rng.uniform(-12, 4))), int(rng.choice([-128, 127, 0]))
    return float(np.float32(2.0 ** rng.uniform(-8, -2))), int(rng.integers(-128, 128))


def _w_scales(rng, n: int, corner: bool) -> np.ndarray:
    """Per-channel weight scales; corners span 2^-20 .. 2^0."""
    lo, hi = (-20, 0) if corner else (-9, -5)
    return (2.0 ** rng.uniform(lo, hi, n)).astype(np.float32)


def _bias(rng, n: int) -> np.ndarray:
    return rng.integers(-3000, 3000, n).astype(np.int32)


def _fused(rng) -> int:
    return int(rng.choice([0, 1, 3, 2]))   # NONE, RELU, RELU6, RELU_N1_TO_1


def build(case: str, rng, corner: bool = False) -> tuple[bytes, tuple]:
    """The model of ``case`` and its NHWC input shape (batch 1)."""
    b = TFLiteBuilder()
    iq, oq = _act_q(rng, corner), _act_q(rng, corner)
    if case.startswith("pad_"):
        return _pad_conv(b, rng, iq, oq, corner, case == "pad_depthwise")
    if case.startswith("conv") or case == "depthwise":
        H, W, C = (int(v) for v in rng.integers(3, 8, 3))
        fh, fw = (int(v) for v in rng.integers(1, 4, 2))
        stride, dil, pad = (1, 1), (1, 1), 1
        if case == "conv_same_stride":
            stride, pad = (int(rng.integers(1, 3)), int(rng.integers(1, 3))), 0
        if case == "conv_dilated":
            dil, pad = (2, 1), 0
        depthwise = case == "depthwise"
        mult = int(rng.integers(1, 3)) if depthwise else 1
        cout = C * mult if depthwise else int(rng.integers(1, 6))
        eff = ((fh - 1) * dil[0] + 1, (fw - 1) * dil[1] + 1)
        if pad == 0:
            ho, wo = -(-H // stride[0]), -(-W // stride[1])
        else:
            ho, wo = (H - eff[0]) // stride[0] + 1, (W - eff[1]) // stride[1] + 1
        x = b.tensor("x", (1, H, W, C), scale=iq[0], zero_point=iq[1])
        wshape = (1, fh, fw, cout) if depthwise else (cout, fh, fw, C)
        ws = _w_scales(rng, cout, corner)
        w = b.tensor("w", wshape, scale=ws, zero_point=[0] * cout,
                     data=rng.integers(-127, 128, wshape), quantized_dimension=3 if depthwise else 0)
        bias = b.tensor("b", (cout,), "int32", scale=ws * np.float32(iq[0]), zero_point=[0] * cout,
                        data=_bias(rng, cout))
        y = b.tensor("y", (1, ho, wo, cout), scale=oq[0], zero_point=oq[1])
        act = 3 if case == "conv_relu6" else _fused(rng)
        opts = dict(padding=pad, stride_h=stride[0], stride_w=stride[1], fused_activation_function=act,
                    dilation_h_factor=dil[0], dilation_w_factor=dil[1])
        if depthwise:
            b.op("DEPTHWISE_CONV_2D", [x, w, bias], [y],
                 DepthwiseConv2DOptions=dict(opts, depth_multiplier=mult))
        else:
            b.op("CONV_2D", [x, w, bias], [y], Conv2DOptions=opts)
        return b.finish([x], [y]), (H, W, C)
    if case in ("fc", "fc_per_tensor", "reshape_fc"):
        K, N = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        shape = (1, K)
        if case == "reshape_fc":
            h, w_, c = (int(v) for v in rng.integers(1, 4, 3))
            K, shape = h * w_ * c, (1, h, w_, c)
        x = b.tensor("x", shape, scale=iq[0], zero_point=iq[1])
        src = x
        if case == "reshape_fc":
            # the converter's shape plumbing: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE
            shp = b.tensor("shape", (4,), "int32")
            begin = b.tensor("begin", (1,), "int32", data=[0])
            end = b.tensor("end", (1,), "int32", data=[1])
            strides = b.tensor("strides", (1,), "int32", data=[1])
            batch = b.tensor("batch", (), "int32")
            minus1 = b.tensor("minus1", (), "int32", data=-1)
            packed = b.tensor("packed", (2,), "int32")
            src = b.tensor("flat", (1, K), scale=iq[0], zero_point=iq[1])
            b.op("SHAPE", [x], [shp], ShapeOptions={"out_type": 2})
            b.op("STRIDED_SLICE", [shp, begin, end, strides], [batch],
                 StridedSliceOptions={"shrink_axis_mask": 1})
            b.op("PACK", [batch, minus1], [packed], PackOptions={"values_count": 2, "axis": 0})
            b.op("RESHAPE", [x, packed], [src])
        per_tensor = case == "fc_per_tensor"
        ws = _w_scales(rng, 1 if per_tensor else N, corner)
        w = b.tensor("w", (N, K), scale=ws, zero_point=[0] * len(ws), data=rng.integers(-127, 128, (N, K)))
        bias = b.tensor("b", (N,), "int32", scale=ws * np.float32(iq[0]), zero_point=[0] * len(ws),
                        data=_bias(rng, N))
        y = b.tensor("y", (1, N), scale=oq[0], zero_point=oq[1])
        b.op("FULLY_CONNECTED", [src, w, bias], [y],
             FullyConnectedOptions={"fused_activation_function": _fused(rng)})
        return b.finish([x], [y]), shape[1:]
    H, W, C = (int(v) for v in rng.integers(1, 7, 3))
    if case == "add":
        # a residual: x + depthwise1x1(x), the two operands with their own scale and zero point
        bq = _act_q(rng, corner)
        x = b.tensor("x", (1, H, W, C), scale=iq[0], zero_point=iq[1])
        ws = _w_scales(rng, C, False)
        w = b.tensor("w", (1, 1, 1, C), scale=ws, zero_point=[0] * C,
                     data=rng.integers(-127, 128, (1, 1, 1, C)), quantized_dimension=3)
        xb = b.tensor("branch", (1, H, W, C), scale=bq[0], zero_point=bq[1])
        y = b.tensor("y", (1, H, W, C), scale=oq[0], zero_point=oq[1])
        bias = b.tensor("bias", (C,), "int32", scale=ws * np.float32(iq[0]), zero_point=[0] * C,
                        data=_bias(rng, C))
        b.op("DEPTHWISE_CONV_2D", [x, w, bias], [xb],
             DepthwiseConv2DOptions=dict(padding=1, stride_h=1, stride_w=1, depth_multiplier=1))
        first, second = (x, xb) if rng.integers(0, 2) else (xb, x)
        b.op("ADD", [first, second], [y], AddOptions={"fused_activation_function": _fused(rng)})
        return b.finish([x], [y]), (H, W, C)
    if case in ("maxpool", "avgpool"):
        kh, kw = int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pad = 1 if case == "avgpool" else int(rng.integers(0, 2))
        ho, wo = ((-(-H // sh), -(-W // sw)) if pad == 0 else ((H - kh) // sh + 1, (W - kw) // sw + 1))
        x = b.tensor("x", (1, H, W, C), scale=iq[0], zero_point=iq[1])
        y = b.tensor("y", (1, ho, wo, C), scale=iq[0], zero_point=iq[1])
        b.op("MAX_POOL_2D" if case == "maxpool" else "AVERAGE_POOL_2D", [x], [y],
             Pool2DOptions=dict(padding=pad, stride_h=sh, stride_w=sw, filter_height=kh,
                                filter_width=kw, fused_activation_function=_fused(rng)))
        return b.finish([x], [y]), (H, W, C)
    if case == "requantize":
        shape = (1, H, W, C) if rng.integers(0, 2) else (1, H * W * C)
        x = b.tensor("x", shape, scale=iq[0], zero_point=iq[1])
        y = b.tensor("y", shape, scale=oq[0], zero_point=oq[1])
        b.op("QUANTIZE", [x], [y])
        return b.finish([x], [y]), shape[1:]
    if case == "mean":
        x = b.tensor("x", (1, H, W, C), scale=iq[0], zero_point=iq[1])
        axis = b.tensor("axis", (2,), "int32", data=[1, 2])
        keep = bool(rng.integers(0, 2))
        y = b.tensor("y", (1, 1, 1, C) if keep else (1, C), scale=oq[0], zero_point=oq[1])
        b.op("MEAN", [x, axis], [y], ReducerOptions={"keep_dims": keep})
        return b.finish([x], [y]), (H, W, C)
    raise ValueError(case)


def _pad_conv(b, rng, iq, oq, corner, depthwise):
    """PAD (explicit, uneven) -> 3x3 stride-2 VALID convolution, as converters write padding
    that is neither VALID nor SAME."""
    H, W, C = (int(v) for v in rng.integers(3, 8, 3))
    t, bt, l, r = (int(v) for v in rng.integers(0, 3, 4))
    cout = C if depthwise else int(rng.integers(1, 6))
    x = b.tensor("x", (1, H, W, C), scale=iq[0], zero_point=iq[1])
    xp = b.tensor("x_padded", (1, H + t + bt, W + l + r, C), scale=iq[0], zero_point=iq[1])
    b.op("PAD", [x, b.tensor("paddings", (4, 2), "int32", data=[[0, 0], [t, bt], [l, r], [0, 0]])],
         [xp])
    ho, wo = (H + t + bt - 3) // 2 + 1, (W + l + r - 3) // 2 + 1
    ws = _w_scales(rng, cout, corner)
    wshape = (1, 3, 3, cout) if depthwise else (cout, 3, 3, C)
    w = b.tensor("w", wshape, scale=ws, zero_point=[0] * cout, data=rng.integers(-127, 128, wshape),
                 quantized_dimension=3 if depthwise else 0)
    bias = b.tensor("b", (cout,), "int32", scale=ws * np.float32(iq[0]), zero_point=[0] * cout,
                    data=_bias(rng, cout))
    y = b.tensor("y", (1, ho, wo, cout), scale=oq[0], zero_point=oq[1])
    opts = dict(padding=1, stride_h=2, stride_w=2, fused_activation_function=_fused(rng))
    if depthwise:
        b.op("DEPTHWISE_CONV_2D", [xp, w, bias], [y], DepthwiseConv2DOptions=dict(opts, depth_multiplier=1))
    else:
        b.op("CONV_2D", [xp, w, bias], [y], Conv2DOptions=opts)
    return b.finish([x], [y]), (H, W, C)


def mixed(rng) -> tuple[bytes, tuple]:
    """conv 3x3 SAME relu -> depthwise 3x3 SAME relu6 -> ADD -> AVERAGE_POOL 2x2 -> MEAN (keep
    dims) -> int8 QUANTIZE (requantization) -> classifier as a 1x1 CONV_2D -> RESHAPE."""
    b = TFLiteBuilder()
    H, W, C, N = 6, 6, 3, 5
    F = 8

    def act(name, shape):
        s, z = _act_q(rng, False)
        return b.tensor(name, shape, scale=s, zero_point=z)

    def weights(name, shape, n, qdim, in_scale):
        ws = _w_scales(rng, n, False)
        w = b.tensor(name, shape, scale=ws, zero_point=[0] * n, data=rng.integers(-127, 128, shape),
                     quantized_dimension=qdim)
        bias = b.tensor(name + "/bias", (n,), "int32", scale=ws * np.float32(in_scale),
                        zero_point=[0] * n, data=_bias(rng, n))
        return w, bias

    def scale(t):
        return b._tensors[t]["scale"]

    x = act("x", (1, H, W, C))
    c1 = act("conv", (1, H, W, F))
    w, bias = weights("conv/w", (F, 3, 3, C), F, 0, scale(x))
    b.op("CONV_2D", [x, w, bias], [c1], Conv2DOptions=dict(padding=0, stride_h=1, stride_w=1,
                                                           fused_activation_function=1))
    d1 = act("dw", (1, H, W, F))
    w, bias = weights("dw/w", (1, 3, 3, F), F, 3, scale(c1))
    b.op("DEPTHWISE_CONV_2D", [c1, w, bias], [d1], DepthwiseConv2DOptions=dict(
        padding=0, stride_h=1, stride_w=1, depth_multiplier=1, fused_activation_function=3))
    s = act("sum", (1, H, W, F))
    b.op("ADD", [c1, d1], [s], AddOptions={})
    p = b.tensor("pool", (1, 3, 3, F), scale=scale(s), zero_point=b._tensors[s]["zero_point"])
    b.op("AVERAGE_POOL_2D", [s], [p], Pool2DOptions=dict(padding=1, stride_h=2, stride_w=2,
                                                         filter_height=2, filter_width=2))
    m = act("mean", (1, 1, 1, F))
    b.op("MEAN", [p, b.tensor("axes", (2,), "int32", data=[1, 2])], [m],
         ReducerOptions={"keep_dims": True})
    r = act("requantized", (1, 1, 1, F))
    b.op("QUANTIZE", [m], [r])
    logits4 = act("logits4", (1, 1, 1, N))
    w, bias = weights("fc/w", (N, 1, 1, F), N, 0, scale(r))
    b.op("CONV_2D", [r, w, bias], [logits4], Conv2DOptions=dict(padding=1, stride_h=1, stride_w=1))
    logits = b.tensor("logits", (1, N), scale=scale(logits4),
                      zero_point=b._tensors[logits4]["zero_point"])
    b.op("RESHAPE", [logits4, b.tensor("shape", (2,), "int32", data=[1, N])], [logits])
    return b.finish([x], [logits]), (H, W, C)
