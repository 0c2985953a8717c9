"""Golden int8 CNN operators (conv / depthwise, pooling, add, clamp).

Checked four ways: (a) against float math with a derived error bound, (b) against
onnxruntime running the float ONNX operator on the dequantized operands, (c) bit for
bit against TFLite's reference loops transcribed with Python ints, (d) corner cases.
"""

import zlib

import numpy as np
import pytest

from celosia.sim.golden import (
    INT32_MAX,
    INT32_MIN,
    activation_range,
    add,
    add_params,
    avg_pool,
    ceil_mode_padding,
    clamp_int8,
    conv2d,
    conv2d_float,
    conv_output_size,
    dequantize,
    global_avg_pool,
    global_avg_pool_params,
    global_avg_pool_requant,
    max_pool,
    quantize,
    quantize_multiplier,
    same_padding,
)
from celosia.sw.quant import (
    choose_activation_qparams,
    quantize_bias,
    quantize_weights_per_channel,
    requant_params,
)
from tflite_ref import c_div, c_int32, ref_mbqm, ref_quantize_multiplier, ref_rdbp, ref_srdhm

# --- TFLite reference kernels transcribed with Python ints (independent of sim/golden) ---


def ref_mbqm_smaller_than_one_exp(x: int, m: int, left_shift: int) -> int:
    return ref_rdbp(ref_srdhm(x, m), -left_shift)


def ref_conv_per_channel(x, x_zp, w, bias, m0, shift, out_zp, act_min, act_max,
                         stride, pad_hw, dilation, out_hw):
    """reference_integer_ops::ConvPerChannel (groups from filter_input_depth)."""
    input_offset, output_offset = -x_zp, out_zp
    batches, input_height, input_width, input_depth = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    output_depth, filter_height, filter_width, filter_input_depth = len(w), len(w[0]), len(w[0][0]), len(w[0][0][0])
    groups = input_depth // filter_input_depth
    filters_per_group = output_depth // groups
    (stride_height, stride_width), (pad_height, pad_width) = stride, pad_hw
    (dilation_height_factor, dilation_width_factor), (output_height, output_width) = dilation, out_hw
    out = np.zeros((batches, output_height, output_width, output_depth), dtype=np.int64)
    for batch in range(batches):
        for out_y in range(output_height):
            in_y_origin = out_y * stride_height - pad_height
            for out_x in range(output_width):
                in_x_origin = out_x * stride_width - pad_width
                for out_channel in range(output_depth):
                    group = out_channel // filters_per_group
                    acc = 0
                    for filter_y in range(filter_height):
                        in_y = in_y_origin + dilation_height_factor * filter_y
                        for filter_x in range(filter_width):
                            in_x = in_x_origin + dilation_width_factor * filter_x
                            if not (0 <= in_x < input_width and 0 <= in_y < input_height):
                                continue
                            for in_channel in range(filter_input_depth):
                                input_val = x[batch][in_y][in_x][in_channel + group * filter_input_depth]
                                filter_val = w[out_channel][filter_y][filter_x][in_channel]
                                acc = c_int32(acc + filter_val * (input_val + input_offset))
                    acc = c_int32(acc + bias[out_channel])
                    acc = ref_mbqm(acc, m0[out_channel], shift[out_channel])
                    acc += output_offset
                    out[batch, out_y, out_x, out_channel] = min(max(acc, act_min), act_max)
    return out.astype(np.int8)


def ref_depthwise_conv_per_channel(x, x_zp, dw_filter, depth_multiplier, bias, m0, shift, out_zp,
                                   act_min, act_max, stride, pad_hw, dilation, out_hw):
    """reference_integer_ops::DepthwiseConvPerChannel, filter [1, Fh, Fw, Cin * mult]."""
    batches, input_height, input_width, input_depth = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    filter_height, filter_width = len(dw_filter[0]), len(dw_filter[0][0])
    (stride_height, stride_width), (pad_height, pad_width) = stride, pad_hw
    (dh, dw), (output_height, output_width) = dilation, out_hw
    out = np.zeros((batches, output_height, output_width, input_depth * depth_multiplier), dtype=np.int64)
    for batch in range(batches):
        for out_y in range(output_height):
            for out_x in range(output_width):
                for in_channel in range(input_depth):
                    for m in range(depth_multiplier):
                        output_channel = m + in_channel * depth_multiplier
                        in_x_origin = out_x * stride_width - pad_width
                        in_y_origin = out_y * stride_height - pad_height
                        acc = 0
                        for filter_y in range(filter_height):
                            for filter_x in range(filter_width):
                                in_x = in_x_origin + dw * filter_x
                                in_y = in_y_origin + dh * filter_y
                                if 0 <= in_x < input_width and 0 <= in_y < input_height:
                                    input_val = x[batch][in_y][in_x][in_channel]
                                    filter_val = dw_filter[0][filter_y][filter_x][output_channel]
                                    acc = c_int32(acc + filter_val * (input_val - x_zp))
                        acc = c_int32(acc + bias[output_channel])
                        acc = ref_mbqm(acc, m0[output_channel], shift[output_channel]) + out_zp
                        out[batch, out_y, out_x, output_channel] = min(max(acc, act_min), act_max)
    return out.astype(np.int8)


def ref_pool(x, kind, kernel, stride, pad_hw, out_hw, act_min=-128, act_max=127):
    """reference_integer_ops::AveragePool / MaxPool."""
    batches, input_height, input_width, depth = len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])
    out = np.zeros((batches, *out_hw, depth), dtype=np.int64)
    for batch in range(batches):
        for out_y in range(out_hw[0]):
            for out_x in range(out_hw[1]):
                for channel in range(depth):
                    in_x_origin = out_x * stride[1] - pad_hw[1]
                    in_y_origin = out_y * stride[0] - pad_hw[0]
                    fx0, fx1 = max(0, -in_x_origin), min(kernel[1], input_width - in_x_origin)
                    fy0, fy1 = max(0, -in_y_origin), min(kernel[0], input_height - in_y_origin)
                    if kind == "avg":
                        acc, filter_count = 0, 0
                        for fy in range(fy0, fy1):
                            for fx in range(fx0, fx1):
                                acc += x[batch][in_y_origin + fy][in_x_origin + fx][channel]
                                filter_count += 1
                        acc = (c_div(acc + filter_count // 2, filter_count) if acc > 0
                               else c_div(acc - filter_count // 2, filter_count))
                    else:
                        acc = -128
                        for fy in range(fy0, fy1):
                            for fx in range(fx0, fx1):
                                acc = max(acc, x[batch][in_y_origin + fy][in_x_origin + fx][channel])
                    out[batch, out_y, out_x, channel] = min(max(acc, act_min), act_max)
    return out.astype(np.int8)


def ref_add_prepare(s1, s2, so, left_shift=20):
    """add.cc Prepare, int8: float32 scales, C promotions."""
    s1, s2, so = np.float32(s1), np.float32(s2), np.float32(so)
    twice_max_input_scale = float(np.float32(2) * max(s1, s2))  # float, stored in a double
    real1 = float(s1) / twice_max_input_scale
    real2 = float(s2) / twice_max_input_scale
    real_out = twice_max_input_scale / float(np.float32(1 << left_shift) * so)  # int * float is float
    (m1, sh1), (m2, sh2), (mo, sho) = (ref_quantize_multiplier(r) for r in (real1, real2, real_out))
    assert max(sh1, sh2, sho) <= 0
    return dict(a_m0=m1, a_shift=sh1, b_m0=m2, b_shift=sh2, out_m0=mo, out_shift=sho, left_shift=left_shift)


def ref_add_func(x, y, a_zp, b_zp, out_zp, p, act_min, act_max):
    """reference_integer_ops AddFunc for one element."""
    input1_val = -a_zp + x
    input2_val = -b_zp + y
    shifted_input1_val = c_int32(input1_val * (1 << p["left_shift"]))
    shifted_input2_val = c_int32(input2_val * (1 << p["left_shift"]))
    scaled_input1_val = ref_mbqm_smaller_than_one_exp(shifted_input1_val, p["a_m0"], p["a_shift"])
    scaled_input2_val = ref_mbqm_smaller_than_one_exp(shifted_input2_val, p["b_m0"], p["b_shift"])
    raw_sum = c_int32(scaled_input1_val + scaled_input2_val)
    raw_output = ref_mbqm_smaller_than_one_exp(raw_sum, p["out_m0"], p["out_shift"]) + out_zp
    return min(act_max, max(act_min, raw_output))


# --- helpers: a quantized conv layer from float data ---


def qparams(lo, hi):
    qp = choose_activation_qparams(float(lo), float(hi))
    return np.float32(qp.scale), int(qp.zero_point)


class QConv:
    """Float conv data quantized the TFLite way; ``y_ref`` = float conv of the dequantized operands."""

    def __init__(self, rng, n, h, w, cin, cout, k, stride=1, padding=0, groups=1, dilation=1,
                 act="none", x_range=(-1.0, 3.0), out_widen=1.0):
        kh, kw = (k, k) if np.isscalar(k) else k
        self.kw = dict(stride=stride, padding=padding, groups=groups, dilation=dilation)
        lo, hi = x_range
        self.x = rng.uniform(lo, hi, (n, h, w, cin)).astype(np.float32)
        self.w = (rng.standard_normal((cout, kh, kw, cin // groups)) / np.sqrt(kh * kw * cin / groups)).astype(np.float32)
        self.b = (0.3 * rng.standard_normal(cout)).astype(np.float32)
        self.s_x, self.x_zp = qparams(lo, hi)
        self.x_q = quantize(self.x, self.s_x, self.x_zp)
        self.w_q, self.s_w = quantize_weights_per_channel(self.w, axis=0)
        self.bias = quantize_bias(self.b, self.s_x, self.s_w)
        self.x_d = dequantize(self.x_q, self.s_x, self.x_zp).astype(np.float64)
        self.w_d = self.w_q.astype(np.float64) * self.s_w.astype(np.float64)[:, None, None, None]
        self.b_d = self.bias.astype(np.float64) * (np.float64(self.s_x) * self.s_w.astype(np.float64))
        y = conv2d_float(self.x_d, self.w_d, self.b_d, **self.kw)
        self.s_y, self.y_zp = qparams(y.min() * out_widen, y.max() * out_widen)
        self.m0, self.shift = requant_params(self.s_x, self.s_w, self.s_y)
        self.act_min, self.act_max = activation_range(act, self.s_y, self.y_zp)
        self.y_ref = np.clip(y, self.s_y * (self.act_min - self.y_zp), self.s_y * (self.act_max - self.y_zp))

    def run(self):
        return conv2d(self.x_q, self.x_zp, self.w_q, self.bias, self.m0, self.shift, self.y_zp,
                      self.act_min, self.act_max, **self.kw)

    def y_deq(self):
        return dequantize(self.run(), self.s_y, self.y_zp).astype(np.float64)

    def ref_loops(self):
        top, left, bottom, right = _pad4(self.kw["padding"])
        s, d = _p2(self.kw["stride"]), _p2(self.kw["dilation"])
        out_hw = self.run().shape[1:3]
        return ref_conv_per_channel(self.x_q.tolist(), self.x_zp, self.w_q.tolist(), self.bias.tolist(),
                                    self.m0.tolist(), self.shift.tolist(), self.y_zp, self.act_min,
                                    self.act_max, s, (top, left), d, out_hw)


def seed_of(*key) -> int:
    """A seed stable across runs (Python's hash of strings is randomized)."""
    return zlib.crc32(repr(key).encode())


def _p2(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def _pad4(p):
    if np.isscalar(p):
        return (p,) * 4
    return (p[0], p[1], p[0], p[1]) if len(p) == 2 else tuple(p)


# Shapes: (n, h, w, cin, cout, k, stride, padding, groups, dilation)
CONV_CASES = [
    (1, 8, 8, 3, 5, 1, 1, 0, 1, 1),                  # 1x1
    (2, 9, 7, 3, 7, 3, 1, 1, 1, 1),                  # 3x3 same
    (1, 11, 10, 5, 6, 3, 2, (0, 1, 1, 0), 1, 1),     # stride 2, asymmetric pads
    (1, 13, 13, 7, 4, 5, 2, 2, 1, 1),                # 5x5 stride 2
    (1, 17, 15, 3, 5, 7, 2, 3, 1, 1),                # 7x7 stride 2 (ResNet stem-like)
    (1, 27, 27, 3, 4, 11, 4, 2, 1, 1),               # 11x11 stride 4 (AlexNet conv1-like)
    (1, 9, 9, 6, 4, 3, 1, 1, 2, 1),                  # grouped (2 groups)
    (1, 10, 9, 5, 5, 3, 1, 1, 5, 1),                 # depthwise 3x3
    (1, 11, 11, 3, 6, 5, 2, 2, 3, 1),                # depthwise, channel multiplier 2
    (1, 12, 12, 13, 13, 3, 2, (1, 1, 0, 0), 13, 1),  # depthwise stride 2, TF-style pads
    (1, 11, 12, 4, 3, 3, 1, 2, 1, 2),                # dilation 2
    (1, 4, 5, 3, 3, 5, 1, 4, 1, 1),                  # padding as large as the kernel - 1
]


def _case_id(c):
    n, h, w, cin, cout, k, s, p, g, d = c
    return f"{h}x{w}x{cin}->{cout}_k{k}_s{s}_p{p}_g{g}_d{d}"


# --- (a) against float math ---


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
@pytest.mark.parametrize("act", ["none", "relu6"])
def test_conv2d_vs_float(case, act):
    n, h, w, cin, cout, k, s, p, g, d = case
    rng = np.random.default_rng(seed_of(case))
    c = QConv(rng, n, h, w, cin, cout, k, s, p, g, d, act=act, x_range=(-1.0, 6.0))
    y = c.y_deq()
    # 1) Same operands, exact integer accumulation: the only error is MBQM's double
    # rounding (<= 0.5 + 0.5 step) plus M0's relative error (<= 2^-31).
    err = np.abs(y - c.y_ref)
    assert np.all(err <= c.s_y * (1.0 + 1e-6) + np.abs(c.y_ref) * 2.0 ** -30), err.max() / c.s_y
    # 2) Original float operands: add |x^ - x| <= S_x/2, |w^ - w| <= S_w/2 per tap, |b^ - b| <= S_x S_w/2.
    y_true = conv2d_float(c.x, c.w, c.b, **c.kw)
    lo, hi = c.s_y * (c.act_min - c.y_zp), c.s_y * (c.act_max - c.y_zp)
    y_true = np.clip(y_true, lo, hi)
    half_sw = np.broadcast_to(c.s_w[:, None, None, None] / 2.0, c.w.shape)
    bound = (conv2d_float(np.abs(c.x_d), half_sw, np.float64(c.s_x) * c.s_w / 2.0, **c.kw)
             + conv2d_float(np.full_like(c.x_d, c.s_x / 2.0), np.abs(c.w), None, **c.kw)
             + c.s_y * (1.0 + 1e-6))
    assert np.all(np.abs(y - y_true) <= bound)


def test_pools_and_add_vs_float():
    rng = np.random.default_rng(1)
    s, zp = qparams(-2.0, 5.0)
    x_q = rng.integers(-128, 128, (2, 9, 11, 5)).astype(np.int8)
    x_d = dequantize(x_q, s, zp).astype(np.float64)
    # Max commutes with the monotone dequantization: exact.
    y = dequantize(max_pool(x_q, 3, 2, 1), s, zp)
    ref = np.full((2, 5, 6, 5), -np.inf)
    xp = np.pad(x_d, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    for i in range(5):
        for j in range(6):
            ref[:, i, j] = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
    np.testing.assert_array_equal(y, ref.astype(np.float32))
    # Average: one rounding of the mean, <= half a step.
    g = dequantize(global_avg_pool(x_q), s, zp).astype(np.float64)
    assert np.all(np.abs(g - x_d.mean(axis=(1, 2), keepdims=True)) <= s * 0.5 + 1e-5)
    a = dequantize(avg_pool(x_q, (3, 2), (2, 3)), s, zp).astype(np.float64)
    for i in range(a.shape[1]):
        for j in range(a.shape[2]):
            m = x_d[:, 2 * i:2 * i + 3, 3 * j:3 * j + 2].mean(axis=(1, 2))
            assert np.all(np.abs(a[:, i, j] - m) <= s * 0.5 + 1e-5)
    # Add: final double rounding (<= 1 step) + input roundings (<= 1.125 units each, times real_out).
    sb, zb = qparams(-0.5, 0.25)
    so, zo = qparams(-2.5, 5.25)
    b_q = rng.integers(-128, 128, x_q.shape).astype(np.int8)
    p = add_params(s, sb, so)
    y = dequantize(add(x_q, zp, b_q=b_q, b_zp=zb, out_zp=zo, **p), so, zo).astype(np.float64)
    ref = np.clip(x_d + dequantize(b_q, sb, zb), so * (-128 - zo), so * (127 - zo))
    real_out = 2 * max(s, sb) / (2.0 ** 20 * so)
    assert np.all(np.abs(y - ref) <= so * (1.0 + 2.25 * real_out + 1e-6))


# --- (b) against onnxruntime (float operators on the dequantized operands) ---


def _ort_run(node, inputs, out_name="y", initializers=()):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name=k) for k, v in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})[0]


def nchw(a):
    return np.transpose(a, (0, 3, 1, 2))


def nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv2d_vs_onnxruntime(case):
    from onnx import helper

    n, h, w, cin, cout, k, s, p, g, d = case
    rng = np.random.default_rng(seed_of(case) + 7)
    c = QConv(rng, n, h, w, cin, cout, k, s, p, g, d, x_range=(-3.0, 1.0))
    top, left, bottom, right = _pad4(p)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(_p2(s)), dilations=list(_p2(d)),
                            pads=[top, left, bottom, right], group=g, kernel_shape=list(_p2(k)))
    y_ort = nhwc(_ort_run(node, {"x": nchw(c.x_d)},
                          initializers=[("w", np.transpose(c.w_d, (0, 3, 1, 2))), ("b", c.b_d)]))
    y = c.y_deq()
    assert y.shape == y_ort.shape
    y_ort = np.clip(y_ort, c.s_y * (-128 - c.y_zp), c.s_y * (127 - c.y_zp))
    # <= 1 step of MBQM rounding, plus float32 rounding inside onnxruntime.
    f32 = 1e-6 * (conv2d_float(np.abs(c.x_d), np.abs(c.w_d), np.abs(c.b_d), **c.kw) + 1.0)
    assert np.all(np.abs(y - y_ort) <= c.s_y * (1.0 + 1e-6) + f32)


def test_conv2d_relu6_clip_vs_onnxruntime():
    from onnx import helper
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(5)
    c = QConv(rng, 1, 9, 9, 4, 6, 3, 1, 1, act="relu6", x_range=(-4.0, 4.0), out_widen=4.0)
    assert c.act_max < 127 and c.act_min > -128  # the relu6 clamp bites
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    inits = [numpy_helper.from_array(a.astype(np.float32), name=nm) for nm, a in
             [("w", np.transpose(c.w_d, (0, 3, 1, 2))), ("b", c.b_d), ("lo", np.array(0.0)), ("hi", np.array(6.0))]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ort = nhwc(sess.run(None, {"x": nchw(c.x_d).astype(np.float32)})[0])
    y = c.y_deq()
    assert np.all(np.abs(y - y_ort) <= c.s_y * (1.0 + 1e-5))
    assert y.max() > 5.0 and y.min() == 0.0


POOL_CASES = [  # kernel, stride, pads (top, left, bottom, right)
    ((3, 3), (2, 2), (1, 1, 1, 1)),
    ((2, 2), (2, 2), (0, 0, 0, 0)),
    ((3, 2), (1, 2), (0, 1, 2, 0)),
    ((5, 5), (3, 3), (2, 2, 2, 2)),
    ((7, 7), (1, 1), (0, 0, 0, 0)),
]


def _pool_input(kernel, stride, pads):
    """``(s, zp, x_q, x_d)``: int8 [2, 9, 10, 7] with an all-minimum corner, and its real values."""
    rng = np.random.default_rng(sum(kernel + stride + pads))
    s, zp = qparams(-1.5, 4.0)
    x_q = rng.integers(-128, 128, (2, 9, 10, 7)).astype(np.int8)
    x_q[0, :3, :3, :] = -128  # an all-minimum corner: padding must not win the max
    x_q[1, -2:, -2:, :] = -128  # and one where the ceil-mode windows overhang
    return s, zp, x_q, dequantize(x_q, s, zp)


@pytest.mark.parametrize("kernel, stride, pads", POOL_CASES)
def test_pools_vs_onnxruntime(kernel, stride, pads):
    from onnx import helper

    s, zp, x_q, x_d = _pool_input(kernel, stride, pads)
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pads))
    mp = nhwc(_ort_run(helper.make_node("MaxPool", ["x"], ["y"], **attrs), {"x": nchw(x_d)}))
    np.testing.assert_array_equal(dequantize(max_pool(x_q, kernel, stride, pads), s, zp), mp)
    for include in (0, 1):
        ap = nhwc(_ort_run(helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=include, **attrs),
                           {"x": nchw(x_d)}))
        y = dequantize(avg_pool(x_q, kernel, stride, pads, count_include_pad=bool(include), x_zp=zp), s, zp)
        assert y.shape == ap.shape
        assert np.all(np.abs(y - ap) <= s * 0.5 + 1e-5)


@pytest.mark.parametrize("kernel, stride, pads", POOL_CASES)
def test_max_pool_ceil_mode_vs_onnxruntime(kernel, stride, pads):
    """ONNX MaxPool ``ceil_mode=1``: the extra last row / column of windows overhangs the
    padded input and takes the max of what it covers."""
    from onnx import helper

    s, zp, x_q, x_d = _pool_input(kernel, stride, pads)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(stride),
                            pads=list(pads), ceil_mode=1)
    mp = nhwc(_ort_run(node, {"x": nchw(x_d)}))
    np.testing.assert_array_equal(dequantize(max_pool(x_q, kernel, stride, pads, ceil_mode=True), s, zp), mp)


def test_global_avg_pool_vs_onnxruntime():
    from onnx import helper

    rng = np.random.default_rng(11)
    s, zp = qparams(-0.7, 3.3)
    x_q = rng.integers(-128, 128, (3, 7, 7, 13)).astype(np.int8)
    x_d = dequantize(x_q, s, zp)
    gp = nhwc(_ort_run(helper.make_node("GlobalAveragePool", ["x"], ["y"]), {"x": nchw(x_d)}))
    y = global_avg_pool(x_q)
    assert y.shape == (3, 1, 1, 13)
    assert np.all(np.abs(dequantize(y, s, zp) - gp) <= s * 0.5 + 1e-5)
    # Own output qparams: one MBQM rounding (<= 1 step) on sum(x - zp) * S_in / (S_out * 49).
    so, zo = qparams(gp.min(), gp.max())
    m0, shift = global_avg_pool_params(s, so, 49)
    yr = global_avg_pool_requant(x_q, zp, zo, m0, shift)
    assert np.all(np.abs(dequantize(yr, so, zo) - gp) <= so * (1.0 + 1e-5))
    # ... and with equal qparams it is the plain average up to the rounding rule.
    m0e, she = global_avg_pool_params(s, s, 49)
    assert np.all(np.abs(global_avg_pool_requant(x_q, zp, zp, m0e, she).astype(int) - y) <= 1)


@pytest.mark.parametrize("ranges", [
    ((-1.0, 3.0), (-1.0, 3.0), (-2.0, 6.0)),     # equal input scales
    ((-1.0, 3.0), (-0.2, 0.1), (-1.2, 3.1)),     # very different input scales
    ((0.0, 6.0), (-4.0, 4.0), (-1.0, 1.0)),      # output saturates
])
def test_add_vs_onnxruntime(ranges):
    from onnx import helper

    (sa, za), (sb, zb), (so, zo) = (qparams(*r) for r in ranges)
    rng = np.random.default_rng(3)
    a_q = rng.integers(-128, 128, (2, 6, 5, 11)).astype(np.int8)
    b_q = rng.integers(-128, 128, (2, 6, 5, 11)).astype(np.int8)
    a_d, b_d = dequantize(a_q, sa, za), dequantize(b_q, sb, zb)
    y_ort = _ort_run(helper.make_node("Add", ["a", "b"], ["y"]), {"a": a_d, "b": b_d})
    y_ort = np.clip(y_ort, so * (-128 - zo), so * (127 - zo))
    p = add_params(sa, sb, so)
    y = dequantize(add(a_q, za, b_q=b_q, b_zp=zb, out_zp=zo, **p), so, zo)
    real_out = 2 * max(sa, sb) / (2.0 ** 20 * so)
    assert np.all(np.abs(y - y_ort) <= so * (1.0 + 2.25 * real_out + 1e-5))


# --- (c) bit for bit against the transcribed TFLite loops ---


BITEXACT_CONV = [
    (1, 6, 7, 3, 4, 3, 1, 1, 1, 1),
    (2, 7, 6, 5, 3, 5, 2, (2, 1, 2, 2), 1, 1),
    (1, 7, 7, 4, 6, 3, 2, (0, 0, 1, 1), 2, 1),
    (1, 6, 6, 3, 3, 3, 1, 2, 1, 2),
    (1, 9, 9, 2, 3, 4, 4, 0, 1, 1),
    (1, 5, 5, 3, 2, 1, 2, 0, 1, 1),
]


@pytest.mark.parametrize("case", BITEXACT_CONV, ids=_case_id)
@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_conv2d_bit_exact_vs_tflite_loops(case, act):
    n, h, w, cin, cout, k, s, p, g, d = case
    rng = np.random.default_rng(seed_of(case, act))
    c = QConv(rng, n, h, w, cin, cout, k, s, p, g, d, act=act, x_range=(-2.0, 5.0), out_widen=0.5)
    np.testing.assert_array_equal(c.run(), c.ref_loops())


@pytest.mark.parametrize("mult, k, s, pads", [(1, 3, 1, (1, 1, 1, 1)), (2, 3, 2, (0, 0, 1, 1)),
                                               (3, 5, 1, (2, 2, 2, 2)), (1, 2, 2, (0, 0, 0, 0))])
def test_depthwise_bit_exact_vs_tflite_loops(mult, k, s, pads):
    rng = np.random.default_rng(mult * 100 + k)
    cin = 5
    c = QConv(rng, 2, 7, 6, cin, cin * mult, k, s, pads, cin, 1, x_range=(-1.0, 2.0), out_widen=0.7)
    dw_filter = np.transpose(c.w_q, (3, 1, 2, 0))  # [Cout, Fh, Fw, 1] -> TFLite [1, Fh, Fw, Cout]
    got = c.run()
    want = ref_depthwise_conv_per_channel(
        c.x_q.tolist(), c.x_zp, dw_filter.tolist(), mult, c.bias.tolist(), c.m0.tolist(), c.shift.tolist(),
        c.y_zp, -128, 127, (s, s), pads[:2], (1, 1), got.shape[1:3])
    np.testing.assert_array_equal(got, want)


def test_conv2d_bit_exact_extremes():
    """Random int8 everything, huge biases (acc + bias wraps), large and tiny multipliers, saturation."""
    rng = np.random.default_rng(99)
    for trial in range(6):
        cin, cout, k = 3, 4, 3
        x_q = rng.integers(-128, 128, (1, 5, 6, cin)).astype(np.int8)
        w_q = rng.integers(-128, 128, (cout, k, k, cin)).astype(np.int8)
        bias = rng.integers(INT32_MIN, INT32_MAX, cout, endpoint=True).astype(np.int32)
        if trial % 2:
            bias[:] = rng.integers(-20000, 20000, cout)
        m0 = rng.integers(1 << 30, 1 << 31, cout)
        shift = rng.integers(-31, 8 if trial < 3 else 1, cout)
        x_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        pads = (1, 0, 2, 1)
        got = conv2d(x_q, x_zp, w_q, bias, m0, shift, out_zp, stride=(1, 2), padding=pads)
        want = ref_conv_per_channel(x_q.tolist(), x_zp, w_q.tolist(), bias.tolist(), m0.tolist(), shift.tolist(),
                                    out_zp, -128, 127, (1, 2), (1, 0), (1, 1), got.shape[1:3])
        np.testing.assert_array_equal(got, want)
    # Saturation on both sides actually happened in this batch of random layers.
    assert got.min() == -128 or got.max() == 127


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, pads", POOL_CASES + [((4, 4), (4, 4), (0, 0, 3, 3))])
def test_pools_bit_exact_vs_tflite_loops(kind, kernel, stride, pads):
    rng = np.random.default_rng(7)
    x_q = rng.integers(-128, 128, (1, 9, 10, 3)).astype(np.int8)
    fn = max_pool if kind == "max" else avg_pool
    for act in ((-128, 127), (-20, 50)):
        got = fn(x_q, kernel, stride, pads, act_min=act[0], act_max=act[1])
        want = ref_pool(x_q.tolist(), kind, kernel, stride, pads[:2], got.shape[1:3], *act)
        np.testing.assert_array_equal(got, want)


def test_global_avg_pool_bit_exact():
    rng = np.random.default_rng(8)
    x_q = rng.integers(-128, 128, (2, 5, 3, 4)).astype(np.int8)
    want = ref_pool(x_q.tolist(), "avg", (5, 3), (1, 1), (0, 0), (1, 1))
    np.testing.assert_array_equal(global_avg_pool(x_q), want)
    in_zp, out_zp = -7, 12
    m0, shift = global_avg_pool_params(np.float32(0.02), np.float32(0.013), 15)
    got = global_avg_pool_requant(x_q, in_zp, out_zp, m0, shift)
    for n in range(2):
        for ch in range(4):
            acc = int((x_q[n, :, :, ch].astype(int) - in_zp).sum())
            assert got[n, 0, 0, ch] == min(127, max(-128, ref_mbqm(acc, m0, shift) + out_zp))


@pytest.mark.parametrize("scales", [
    (0.0156862754, 0.0156862754, 0.0313725509),
    (0.0156862754, 0.0011764706, 0.0164705887),
    (0.05, 0.003, 0.007),
    (1e-4, 0.25, 0.125),
    (0.1, 0.1, 0.1),
])
def test_add_bit_exact_vs_tflite(scales):
    p = add_params(*scales)
    assert p == ref_add_prepare(*scales)
    assert p["a_shift"] <= 0 and p["b_shift"] <= 0 and p["out_shift"] <= 0
    # Every pair of int8 values (65536 elements) for one choice of zero points and clamp.
    a_q = np.repeat(np.arange(-128, 128), 256).astype(np.int8)
    b_q = np.tile(np.arange(-128, 128), 256).astype(np.int8)
    a_zp, b_zp, out_zp, act = 13, -100, -5, (-128, 127)
    got = add(a_q, a_zp, b_q=b_q, b_zp=b_zp, out_zp=out_zp, act_min=act[0], act_max=act[1], **p)
    want = [ref_add_func(a, b, a_zp, b_zp, out_zp, p, *act) for a, b in zip(a_q.tolist(), b_q.tolist())]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.int8))
    # Random zero points and a relu-style clamp on a subset.
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 65536, 2000)
    a_zp, b_zp, out_zp = (int(v) for v in rng.integers(-128, 128, 3))
    got = add(a_q[idx], a_zp, b_q=b_q[idx], b_zp=b_zp, out_zp=out_zp, act_min=out_zp, act_max=127, **p)
    want = [ref_add_func(a, b, a_zp, b_zp, out_zp, p, out_zp, 127) for a, b in zip(a_q[idx].tolist(), b_q[idx].tolist())]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.int8))


# --- (d) corner cases ---


@pytest.mark.parametrize("x_zp", [-128, -37, 0, 90, 127])
def test_conv_padding_is_real_zero(x_zp):
    """Padding contributes nothing: as if the input held x_zp (real 0), not q = 0."""
    x_q = np.full((1, 4, 5, 2), x_zp, dtype=np.int8)
    x_q[0, 1, 2, :] = np.int8(x_zp + 1 if x_zp < 127 else x_zp - 1)
    delta = int(x_q[0, 1, 2, 0]) - x_zp
    w_q = np.ones((3, 3, 3, 2), dtype=np.int8)
    y = conv2d(x_q, x_zp, w_q, None, 1 << 30, 1, 0, padding=1)  # multiplier 1.0
    want = np.zeros((1, 4, 5, 3), dtype=np.int8)
    want[0, 0:3, 1:4, :] = 2 * delta  # the 3x3 neighbourhood of (1, 2), 2 channels
    np.testing.assert_array_equal(y, want)
    # All-x_zp input with a bias: every output, border or not, is exactly the bias.
    y = conv2d(np.full((1, 5, 5, 2), x_zp, np.int8), x_zp, w_q, np.array([7, -3, 0], np.int32),
               1 << 30, 1, 0, stride=2, padding=(2, 2, 1, 1))
    assert np.all(y == np.array([7, -3, 0], np.int8))


def test_conv_border_counts_with_ones():
    """Input q = x_zp + 1 everywhere, ones 5x5 filter: each output = number of in-image taps."""
    x_zp = -50
    x_q = np.full((1, 6, 7, 1), x_zp + 1, dtype=np.int8)
    y = conv2d(x_q, x_zp, np.ones((1, 5, 5, 1), np.int8), None, 1 << 30, 1, 0, stride=(2, 4), padding=2)
    rows = [min(6, i * 2 + 3) - max(0, i * 2 - 2) for i in range(3)]
    cols = [min(7, j * 4 + 3) - max(0, j * 4 - 2) for j in range(2)]
    np.testing.assert_array_equal(y[0, :, :, 0], np.outer(rows, cols))


def test_depthwise_channels_stay_separate():
    x_q = np.zeros((1, 3, 3, 3), np.int8)
    x_q[..., 0], x_q[..., 1], x_q[..., 2] = 1, 2, 3
    w_q = np.ones((6, 3, 3, 1), np.int8)
    w_q[1::2] *= -1  # multiplier 2: channels (c, +) and (c, -)
    y = conv2d(x_q, 0, w_q, None, 1 << 30, 1, 0, groups=3)
    np.testing.assert_array_equal(y.ravel(), [9, -9, 18, -18, 27, -27])


def test_conv_saturation_and_requant_extremes():
    x_q = np.full((1, 3, 3, 4), 127, np.int8)
    w = np.full((2, 3, 3, 4), 127, np.int8)
    w[1] = -127
    y = conv2d(x_q, -128, w, None, 1 << 30, 0, 10)  # acc = +-36*255*127 -> clamps
    np.testing.assert_array_equal(y.ravel(), [127, -128])
    y = conv2d(x_q, -128, w, None, 1 << 30, -31, 10)  # tiny multiplier: round(acc / 2^32) = 0
    np.testing.assert_array_equal(y.ravel(), [10, 10])
    y = conv2d(x_q, -128, w, None, 1 << 30, 0, 10, act_min=0, act_max=20)
    np.testing.assert_array_equal(y.ravel(), [20, 0])


def test_pool_rounding_and_padding_rules():
    x = np.array([1, 2, -1, -2, -1, 0, 1, 0, 0, 3, 4]).astype(np.int8).reshape(1, 1, -1, 1)
    # windows of 2: [1,2]=1.5->2, [2,-1]=0.5->1, [-1,-2]=-1.5->-2, [-2,-1]->-2, [-1,0]=-0.5->-1, [0,1]->1, ...
    y = avg_pool(x, (1, 2), (1, 1))
    np.testing.assert_array_equal(y.ravel(), [2, 1, -2, -2, -1, 1, 1, 0, 2, 4])
    # Windows of 3 with 1 padding at each end, count_include_pad False: first is [1,2]/2.
    y = avg_pool(x, (1, 3), (1, 3), (0, 1, 0, 1))
    np.testing.assert_array_equal(y.ravel(), [2, -1, 0, 2])  # [1,2], [-1,-2,-1], [0,1,0], [0,3,4]->7/3
    y = avg_pool(x, (1, 3), (1, 3), (0, 1, 0, 1), count_include_pad=True, x_zp=-6)
    np.testing.assert_array_equal(y.ravel(), [-1, -1, 0, 2])  # (-6+3)/3=-1, -4/3, 1/3, (7-6)/3
    # Max pool: all -128 input with padding stays -128 (padding is not 0).
    xm = np.full((1, 4, 4, 2), -128, np.int8)
    assert np.all(max_pool(xm, 3, 2, 1) == -128)
    with pytest.raises(ValueError):
        max_pool(xm, 2, 2, (0, 0, 2, 2))  # last window entirely padding
    with pytest.raises(ValueError):
        avg_pool(xm, 2, 1, 1, count_include_pad=True)  # needs x_zp


def test_clamp_and_activation_range():
    s, zp = np.float32(0.03529411926865578), -100
    lo, hi = activation_range("relu6", s, zp)
    assert (lo, hi) == (-100, 70)
    q = np.arange(-128, 128).astype(np.int8)
    y = clamp_int8(q, lo, hi)
    assert y.dtype == np.int8 and y.min() == -100 and y.max() == 70
    np.testing.assert_array_equal(dequantize(y, s, zp), np.clip(dequantize(q, s, zp), 0.0, np.float32(s * 170)))
    with pytest.raises(ValueError):
        clamp_int8(q, 5, 4)


def test_geometry_helpers():
    assert same_padding((224, 224), 3, 2) == (0, 0, 1, 1)
    assert same_padding((224, 224), 7, 2) == (2, 2, 3, 3)
    assert same_padding((5, 6), (3, 1), 1) == (1, 0, 1, 0)
    assert conv_output_size(227, 11, 4, 0, 0) == 55
    assert conv_output_size(7, 3, 1, 2, 2, dilation=2) == 7
    # ceil_mode: (8 - 3) / 2 rounds up to 3 -> 4 windows, the last one overhanging by one.
    assert conv_output_size(8, 3, 2, 0, 0) == 3
    assert conv_output_size(8, 3, 2, 0, 0, ceil_mode=True) == 4
    assert ceil_mode_padding((8, 8), 3, 2, 0) == (0, 0, 1, 1)
    # ceil(5 / 2) + 1 = 4, but the 4th window would start at 6 = 5 + 1, in the bottom padding.
    assert conv_output_size(5, 2, 2, 1, 1, ceil_mode=True) == 3
    assert ceil_mode_padding((5, 5), 2, 2, 1) == (1, 1, 1, 1)
    assert conv_output_size(6, 2, 2, 0, 0, ceil_mode=True) == 3  # exact: no extra window
    x = np.zeros((1, 224, 224, 3), np.int8)
    y = conv2d(x, 0, np.zeros((8, 3, 3, 3), np.int8), None, 0, 0, 0, stride=2, padding=same_padding((224, 224), 3, 2))
    assert y.shape == (1, 112, 112, 8)


def test_argument_checks():
    x = np.zeros((1, 4, 4, 4), np.int8)
    with pytest.raises(ValueError):
        conv2d(x, 0, np.zeros((3, 3, 3, 2), np.int8), None, 1, 0, 0, groups=2)  # Cout not a multiple
    with pytest.raises(ValueError):
        conv2d(x, 0, np.zeros((4, 3, 3, 3), np.int8), None, 1, 0, 0)  # Cin mismatch
    with pytest.raises(ValueError):
        conv2d(x.astype(np.int16), 0, np.zeros((4, 3, 3, 4), np.int8), None, 1, 0, 0)
    with pytest.raises(ValueError):
        conv2d(x, 0, np.zeros((4, 5, 5, 4), np.int8), None, 1, 0, 0)  # kernel larger than input
    with pytest.raises(ValueError):
        add(x, 0, 1, 0, x[:, :2], 0, 1, 0, 0, 1, 0)
    with pytest.raises(ValueError):
        add(x, 0, 1, 1, x, 0, 1, 0, 0, 1, 0)  # positive shift is not SmallerThanOneExp
    assert quantize_multiplier(0.5) == (1 << 30, 0)
