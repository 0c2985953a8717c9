"""Golden int8 model vs hand-worked cases, a literal pure-Python TFLite reference, float math and onnxruntime."""

import numpy as np
import pytest

from celosia.sim.golden import (
    INT32_MAX,
    INT32_MIN,
    activation_range,
    dequantize,
    fully_connected,
    fully_connected_float,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
    relu_int8,
    requantize,
    round_half_away_from_zero,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from celosia.sw.quant import (
    choose_activation_qparams,
    quantize_bias,
    quantize_weights_per_channel,
    requant_params,
)
from tflite_ref import c_int32, ref_mbqm, ref_quantize_multiplier, ref_rdbp, ref_srdhm


# --- An independent reference: TFLite reference kernels with Python ints (tflite_ref) ---

def ref_fully_connected_per_channel(x, x_zp, w, bias, m0, shift, out_zp, act_min, act_max):
    """reference_integer_ops::FullyConnectedPerChannel, loop for loop (filter read as w[d][out_c])."""
    input_offset = -x_zp
    output_offset = out_zp
    batches, accum_depth = len(x), len(x[0])
    output_depth = len(w[0])
    out = [[0] * output_depth for _ in range(batches)]
    for b in range(batches):
        for out_c in range(output_depth):
            acc = 0
            for d in range(accum_depth):
                input_val = x[b][d]
                filter_val = w[d][out_c]
                acc = c_int32(acc + filter_val * (input_val + input_offset))
            acc = c_int32(acc + bias[out_c])
            acc_scaled = ref_mbqm(acc, m0[out_c], shift[out_c])
            acc_scaled += output_offset
            acc_scaled = max(acc_scaled, act_min)
            acc_scaled = min(acc_scaled, act_max)
            out[b][out_c] = acc_scaled
    return out


# --- rounding primitives, hand-worked ---

@pytest.mark.parametrize("x, e, want", [
    (3, 1, 2), (-3, 1, -2),           # 1.5 -> 2, -1.5 -> -2: ties away from zero
    (-5, 2, -1), (5, 2, 1),           # -1.25 -> -1
    (-6, 2, -2), (6, 2, 2),           # -1.5 -> -2
    (-7, 2, -2), (7, 2, 2),           # -1.75 -> -2
    (-2, 2, -1), (2, 2, 1),           # -0.5 -> -1, 0.5 -> 1
    (-1, 2, 0), (1, 2, 0),            # -0.25 -> 0
    (0, 0, 0), (-9, 0, -9), (9, 0, 9),
    (INT32_MAX, 31, 1), (INT32_MIN, 31, -1), (-(1 << 30), 31, -1), ((1 << 30) - 1, 31, 0),
    (-(1 << 30) + 1, 31, 0),
])
def test_rounding_divide_by_pot(x, e, want):
    assert int(rounding_divide_by_pot(x, e)) == want
    assert ref_rdbp(x, e) == want


@pytest.mark.parametrize("a, b, want", [
    (INT32_MIN, INT32_MIN, INT32_MAX),            # the one overflow: saturates
    (INT32_MIN, INT32_MAX, -INT32_MAX),           # -(2^31 - 1) exactly
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),
    (1 << 30, 1 << 30, 1 << 29),                  # 0.5 * 0.5 = 0.25 in Q31
    # gemmlowp's nudge (1 - 2^30 for negative products, then C truncation) rounds
    # ties toward +infinity here, unlike RoundingDivideByPOT's ties away from zero.
    (1, 1 << 30, 1),                              # 0.5 -> 1
    (-1, 1 << 30, 0),                             # -0.5 -> 0
    (3, 1 << 30, 2),                              # 1.5 -> 2
    (-3, 1 << 30, -1),                            # -1.5 -> -1
    (-5, 1 << 30, -2),                            # -2.5 -> -2
    (-7, 1 << 29, -2),                            # -1.75 -> -2 (not a tie)
    (0, INT32_MIN, 0),
])
def test_srdhm(a, b, want):
    assert int(saturating_rounding_doubling_high_mul(a, b)) == want
    assert ref_srdhm(a, b) == want


@pytest.mark.parametrize("x, m0, shift, want", [
    (INT32_MIN, INT32_MIN, 0, INT32_MAX),
    (INT32_MAX, INT32_MAX, -31, 1),       # ~0.99999 -> 1
    (-INT32_MAX, INT32_MAX, -31, -1),
    (INT32_MIN, 1 << 30, -31, -1),        # -0.5 -> -1 (away from zero)
    (3, 1 << 30, 1, 3),                   # left shift: multiplier exactly 1.0
    (-3, 1 << 30, 1, -3),
    (5, 1 << 30, 3, 20),                  # 5 * 4.0
    (1 << 28, 1 << 30, 3, -(1 << 30)),    # 2^28 << 3 wraps to INT32_MIN in int32 (as the C multiply on hardware)
    (100, 1 << 30, -1, 25),               # 100 * 0.25
    (-10, 1 << 30, -2, -1),               # -10 * 0.125 = -1.25 -> -1
    (-12, 1 << 30, -2, -2),               # -1.5 -> -2
    (12, 1 << 30, -2, 2),                 # 1.5 -> 2
])
def test_mbqm(x, m0, shift, want):
    assert int(multiply_by_quantized_multiplier(x, m0, shift)) == want
    assert ref_mbqm(x, m0, shift) == want


def test_mbqm_random_against_python_ints():
    rng = np.random.default_rng(1)
    n = 4000
    x = rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)
    m0 = rng.integers(1 << 30, INT32_MAX, n, endpoint=True)
    shift = rng.integers(-31, 8, n)
    x[:50] = rng.integers(-300, 300, 50)  # small values hit the exact-tie paths
    got = multiply_by_quantized_multiplier(x, m0, shift)
    want = [ref_mbqm(int(a), int(b), int(c)) for a, b, c in zip(x, m0, shift)]
    assert got.tolist() == want


def test_requantize_saturates_and_clamps():
    acc = np.array([[10_000, -10_000, 0, 3]], dtype=np.int64)
    bias = np.array([0, 0, 0, 0], dtype=np.int32)
    m0 = np.full(4, 1 << 30)
    shift = np.zeros(4, dtype=np.int64)  # multiplier 0.5
    out = requantize(acc, bias, m0, shift, out_zp=5)
    assert out.dtype == np.int8
    assert out.tolist() == [[127, -128, 5, 5 + 2]]
    out = requantize(acc, bias, m0, shift, out_zp=5, act_min=5, act_max=100)
    assert out.tolist() == [[100, 5, 5, 7]]


# --- quantize_multiplier ---

@pytest.mark.parametrize("real", [1e-9, 2.0 ** -31, 3.3e-7, 0.0004, 0.1234, 0.5, 0.75,
                                  1 - 2.0 ** -40, 1.0, 1.5, 3.99999, 1234.5])
def test_quantize_multiplier_round_trip(real):
    m0, shift = quantize_multiplier(real)
    assert (m0, shift) == ref_quantize_multiplier(real)
    assert (1 << 30) <= m0 < (1 << 31)
    approx = m0 * 2.0 ** (shift - 31)
    assert abs(approx - real) <= real * 2.0 ** -31


def test_quantize_multiplier_edges():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0 ** -33) == (0, 0)  # flushed, as TFLite
    # q rounds up to 2^31: halved with shift + 1
    assert quantize_multiplier(1 - 2.0 ** -33) == (1 << 30, 1)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="multiplier"):
            quantize_multiplier(bad)


# --- quantize / dequantize / activations ---

def test_round_half_away_from_zero():
    x = np.array([2.5, -2.5, 0.5, -0.5, 1.4999, -1.5, 0.49999999999999994, -0.49999999999999994, 3.0])
    assert round_half_away_from_zero(x).tolist() == [3, -3, 1, -1, 1, -2, 0, 0, 3]


def test_quantize_ties_saturation_and_zero_point():
    q = quantize(np.array([0.25, -0.25, 0.75, -0.75, 0.0, 100.0, -100.0, np.inf, -np.inf]), 0.5, 3)
    assert q.dtype == np.int8
    # 0.5 -> 1, -0.5 -> -1, 1.5 -> 2, -1.5 -> -2 (ties away from zero), then + zp 3
    assert q.tolist() == [4, 2, 5, 1, 3, 127, -128, 127, -128]
    assert quantize(np.array([-1.0, 1.0]), 0.5, -128, qmin=-128, qmax=127).tolist() == [-128, -126]
    with pytest.raises(ValueError, match=r"scale must be finite and > 0, not 0"):
        quantize([1.0], 0.0, 0)
    with pytest.raises(ValueError, match=r"zero_point must be in -128\.\.127, not 200"):
        quantize([1.0], 0.1, 200)
    with pytest.raises(ValueError, match="NaN"):
        quantize([np.nan], 0.1, 0)


def test_quantize_dequantize_round_trip_error():
    rng = np.random.default_rng(2)
    s, zp = np.float32(0.037), -17
    lo, hi = s * (-128 - zp), s * (127 - zp)
    x = rng.uniform(lo, hi, 5000).astype(np.float32)
    err = np.abs(dequantize(quantize(x, s, zp), s, zp).astype(np.float64) - x)
    assert err.max() <= s / 2 * (1 + 1e-6)


def test_quantize_matches_onnxruntime_off_ties():
    """ORT QuantizeLinear rounds ties to even; away from ties it must agree with us."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    s, zp = np.float32(0.05), np.int8(7)
    rng = np.random.default_rng(3)
    x = rng.uniform(-8, 8, 4096).astype(np.float32)
    frac = np.abs(x.astype(np.float64) / np.float64(s)) % 1
    x = x[np.abs(frac - 0.5) > 1e-3]
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [x.size])],
        initializer=[helper.make_tensor("s", TensorProto.FLOAT, [], [float(s)]),
                     helper.make_tensor("zp", TensorProto.INT8, [], [int(zp)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x})
    np.testing.assert_array_equal(quantize(x, s, int(zp)), y)


def test_dequantize():
    q = np.array([-128, 0, 5, 127], dtype=np.int8)
    out = dequantize(q, 0.5, 5)
    assert out.dtype == np.float32
    assert out.tolist() == [-66.5, -2.5, 0.0, 61.0]


def test_relu_int8():
    q = np.array([-128, -3, -2, 0, 127], dtype=np.int8)
    assert relu_int8(q, -2).tolist() == [-2, -2, -2, 0, 127]
    assert relu_int8(q, -128).tolist() == q.tolist()


@pytest.mark.parametrize("kind, scale, zp, want", [
    ("none", 0.1, 3, (-128, 127)),
    ("relu", 0.1, 3, (3, 127)),
    ("relu", 0.1, -128, (-128, 127)),
    ("relu6", 0.1, -128, (-128, -68)),       # 6 / 0.1 = 60
    ("relu6", 6 / 255, -128, (-128, 127)),   # the classic relu6 tensor: full range
    ("relu6", 0.01, 0, (0, 127)),            # 600 clamps to qmax
    ("relu6", 0.08, -100, (-100, -25)),      # 6 / 0.08 = 75
    ("relu6", 12.0, 0, (0, 1)),              # 6 / 12 = 0.5 -> 1: tie away from zero (not to even)
    ("relu6", 4.0, 0, (0, 2)),               # 1.5 -> 2
    ("relu_n1_to_1", 0.1, 0, (-10, 10)),
    ("relu_n1_to_1", 2.0, 0, (-1, 1)),       # -0.5 -> -1, 0.5 -> 1
])
def test_activation_range(kind, scale, zp, want):
    assert activation_range(kind, scale, zp) == want


def test_activation_range_errors():
    with pytest.raises(ValueError, match=r"activation must be one of none, relu, relu6, relu_n1_to_1, not 'tanh'"):
        activation_range("tanh", 0.1, 0)


# --- fully_connected ---

def _random_fc(rng, m, k, n, x_zp, out_zp, shift_lo=-12, shift_hi=0):
    x = rng.integers(-128, 128, (m, k), dtype=np.int64).astype(np.int8)
    w = rng.integers(-127, 128, (k, n), dtype=np.int64).astype(np.int8)
    bias = rng.integers(-50_000, 50_000, n).astype(np.int32)
    m0 = rng.integers(1 << 30, 1 << 31, n)
    shift = rng.integers(shift_lo, shift_hi + 1, n)
    return x, x_zp, w, bias, m0, shift, out_zp


@pytest.mark.parametrize("m, k, n, x_zp, out_zp, act", [
    (1, 1, 1, 0, 0, (-128, 127)),
    (3, 5, 7, -128, 127, (-128, 127)),
    (4, 17, 3, 127, -128, (-128, 127)),
    (2, 64, 9, -5, 10, (10, 127)),        # fused relu
    (5, 33, 8, 20, -3, (-3, 60)),         # fused relu6-like clamp
])
def test_fully_connected_matches_literal_tflite(m, k, n, x_zp, out_zp, act):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    x, x_zp, w, bias, m0, shift, out_zp = _random_fc(rng, m, k, n, x_zp, out_zp)
    got = fully_connected(x, x_zp, w, bias, m0, shift, out_zp, *act)
    want = ref_fully_connected_per_channel(x.tolist(), x_zp, w.tolist(), bias.tolist(), m0.tolist(),
                                           shift.tolist(), out_zp, *act)
    assert got.dtype == np.int8 and got.shape == (m, n)
    assert got.tolist() == want
    # both ends of the range are hit with these shifts, so saturation is exercised
    assert (got == act[0]).any() or (got == act[1]).any()


def test_fully_connected_left_shift_and_int32_wrap():
    # multiplier 2.0 (left shift) and an accumulator that overflows int32 before the bias.
    k = 70_000
    x = np.full((1, k), -128, dtype=np.int8)
    w = np.full((k, 2), -127, dtype=np.int8)
    x_zp = 127  # (x - zp) = -255: acc = 70000 * 255 * 127 = 2_266_950_000 > INT32_MAX
    bias = np.array([0, -500_000_000], dtype=np.int32)
    m0 = np.array([1 << 30, 1 << 30])
    shift = np.array([-31, 2])
    got = fully_connected(x, x_zp, w, bias, m0, shift, 0)
    want = ref_fully_connected_per_channel(x.tolist(), x_zp, w.tolist(), bias.tolist(), m0.tolist(),
                                           shift.tolist(), 0, -128, 127)
    assert got.tolist() == want


def test_fully_connected_zero_input_gives_bias_path():
    # x == x_zp everywhere: the accumulator is the bias alone.
    x = np.full((2, 4), 9, dtype=np.int8)
    w = np.ones((4, 3), dtype=np.int8)
    bias = np.array([40, -40, 7], dtype=np.int32)
    m0 = np.full(3, 1 << 30)
    shift = np.array([-2, -2, 0])  # x0.125, x0.125, x0.5
    got = fully_connected(x, 9, w, bias, m0, shift, out_zp=-1)
    assert got.tolist() == [[4, -6, 3]] * 2  # 5-1, -5-1, round(3.5)=4 -> 4-1


def test_fully_connected_errors():
    x = np.zeros((2, 3), dtype=np.int8)
    w = np.zeros((4, 5), dtype=np.int8)
    b = np.zeros(5, dtype=np.int32)
    with pytest.raises(ValueError, match="x_q has K=3 columns but w_q has K=4 rows"):
        fully_connected(x, 0, w, b, 1 << 30, 0, 0)
    with pytest.raises(ValueError, match="x_q must have dtype int8, not int32"):
        fully_connected(x.astype(np.int32), 0, w[:3], b, 1 << 30, 0, 0)
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), not \(4,\)"):
        fully_connected(x, 0, w[:3], b[:4], 1 << 30, 0, 0)
    with pytest.raises(ValueError, match="act_min must be <= act_max, not 10 > 5"):
        fully_connected(x, 0, w[:3], b, 1 << 30, 0, 0, 10, 5)
    with pytest.raises(ValueError, match=r"x_zp must be in -128\.\.127, not 128"):
        fully_connected(x, 128, w[:3], b, 1 << 30, 0, 0)


@pytest.mark.parametrize("activation", ["none", "relu", "relu6"])
@pytest.mark.parametrize("m, k, n", [(8, 16, 4), (3, 100, 7), (1, 1, 1)])
def test_fully_connected_close_to_float(activation, m, k, n):
    """Quantize -> int8 FC -> dequantize stays within a bound derived from each rounding step."""
    rng = np.random.default_rng(k * 7 + n)
    xf = rng.normal(0.3, 1.0, (m, k)).astype(np.float32)
    wf = (rng.normal(0, 0.2, (k, n)) * rng.uniform(0.1, 2, n)).astype(np.float32)
    bf = rng.normal(0, 0.5, n).astype(np.float32)

    xp = choose_activation_qparams(float(xf.min()), float(xf.max()))
    s_x, x_zp = xp.scale, int(xp.zero_point)
    w_q, s_w = quantize_weights_per_channel(wf)
    b_q = quantize_bias(bf, s_x, s_w)
    yf = fully_connected_float(xf, wf, bf, activation)
    y_lin = fully_connected_float(xf, wf, bf)
    yp = choose_activation_qparams(float(y_lin.min()) - 0.5, float(y_lin.max()) + 0.5)
    s_y, y_zp = yp.scale, int(yp.zero_point)
    m0, shift = requant_params(s_x, s_w, s_y)
    act_min, act_max = activation_range(activation, s_y, y_zp)

    x_q = quantize(xf, s_x, x_zp)
    y_q = fully_connected(x_q, x_zp, w_q, b_q, m0, shift, y_zp, act_min, act_max)
    y = dequantize(y_q, s_y, y_zp).astype(np.float64)

    # Bound: |x^ w^ - x w| <= |x^| |w^ - w| + |x^ - x| |w| per product; bias off by
    # half a step; requant (double rounding in MBQM) off by < 1 output step; the
    # multiplier's own relative error 2^-31; dequantize's float32 cast; and the
    # activation clamps (relu6's 6 lands within half a step).
    s_x64, s_w64, s_y64 = float(s_x), s_w.astype(np.float64), float(s_y)
    x_hat = dequantize(x_q, s_x, x_zp).astype(np.float64)
    assert np.abs(x_hat - xf).max() <= s_x64 / 2 * (1 + 1e-6)
    acc_err = np.abs(x_hat) @ np.tile(s_w64 / 2, (k, 1)) + (s_x64 / 2) * np.abs(wf).sum(axis=0)
    bound = acc_err + s_x64 * s_w64 / 2 + s_y64 * (1 + 2.0 ** -20) + np.abs(yf) * 1e-6
    if activation == "relu6":
        bound = bound + s_y64 / 2
    err = np.abs(y - yf)
    assert (err <= bound).all(), (err - bound).max()
    # and it is not vacuous: the bound is a few output steps, and typical errors are smaller
    assert err.mean() <= 2 * s_y64 + acc_err.mean()


def test_fully_connected_float():
    x = np.array([[1.0, -2.0]])
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert fully_connected_float(x, w).tolist() == [[-7.0, -8.0, -9.0]]
    assert fully_connected_float(x, w, [10.0, 2.0, 0.0], "relu").tolist() == [[3.0, 0.0, 0.0]]
    assert fully_connected_float(x, w, [20.0, 2.0, 0.0], "relu6").tolist() == [[6.0, 0.0, 0.0]]
